import sys

from genfw.cli import main

sys.exit(main())
