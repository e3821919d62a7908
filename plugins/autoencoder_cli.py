"""Pictures of an autoencoder's codes, as options of ``genfw eval``:

- ``--reconstruct N``: ``RUN/reconstructions.png``, ``N`` held-out originals beside their
  reconstructions;
- ``--latent-plot``: ``RUN/latent.png``, the codes of a 2-D latent coloured by label over prior
  samples;
- ``--traverse DIMS``: ``RUN/traversals.png``, one row per latent dimension swept over ``[-R, R]``
  (``--traverse-range R``, ``--traverse-steps`` images) from the first held-out example's code.

They read the run's :class:`~genfw_plugins._autoencoder.AutoencoderModel` (``encode``,
``decode``, ``reconstruct``, ``prior``) and its held-out split (``train.holdout``; the first
examples in its fixed order), or the first examples of the training data when the run holds none
out (said on stderr). The paths are printed after the metrics.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import genfw
from genfw.commands import Commands, LoadedRun
from genfw.errors import GenfwError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reconstruct",
        type=int,
        metavar="N",
        help="autoencoders: save RUN/reconstructions.png, N held-out originals beside their reconstructions",
    )
    parser.add_argument(
        "--latent-plot",
        action="store_true",
        help="autoencoders with a 2-D latent: save RUN/latent.png, codes coloured by label over prior samples",
    )
    parser.add_argument(
        "--traverse",
        metavar="DIMS",
        help="autoencoders: save RUN/traversals.png, one row per latent dimension (e.g. 0,1,2 or all) "
        "swept over [-R, R] from the first held-out example's code",
    )
    parser.add_argument(
        "--traverse-range", type=float, default=3.0, metavar="R", help="traversal range (default 3)"
    )
    parser.add_argument("--traverse-steps", type=int, default=9, help="images per traversal row (default 9)")


def check_options(args: argparse.Namespace) -> None:
    """What can be checked before the run is loaded."""
    if args.reconstruct is not None and args.reconstruct < 1:
        raise GenfwError(f"--reconstruct takes a number of examples >= 1, got {args.reconstruct}")
    if args.traverse_steps < 2 or not args.traverse_range > 0:
        raise GenfwError("--traverse-steps must be at least 2 and --traverse-range positive")
    if args.traverse is None and (args.traverse_steps, args.traverse_range) != (9, 3.0):
        raise GenfwError("--traverse-range and --traverse-steps shape a traversal; give --traverse DIMS too")


def pictures(args: argparse.Namespace, run: LoadedRun) -> list[Path]:
    """Draw the pictures asked for into the run folder; their paths."""
    import torch

    from genfw import images
    from genfw.data import held_out_examples
    from genfw.sampling import forked
    from genfw_plugins._autoencoder import AutoencoderModel, autoencoders

    model, modules, dataset = run.model, run.modules, run.dataset
    if not isinstance(model, AutoencoderModel) or model.encode is None or model.decode is None:
        raise GenfwError(
            f"--reconstruct, --latent-plot and --traverse need an autoencoder ({autoencoders()}); "
            f"this run's variant is '{run.cfg.variant.name}'"
        )
    if args.latent_plot and model.prior is None:
        raise GenfwError(
            f"--latent-plot draws codes over samples of a prior distribution of codes; variant "
            f"'{run.cfg.variant.name}' has none (its codes are codebook indices on a grid, sampled by "
            f"an autoregressive prior); use --reconstruct or --traverse"
        )
    if dataset.kind != "image" and (args.reconstruct or args.traverse is not None):
        raise GenfwError("--reconstruct and --traverse draw images; this run's data are points")
    holdout = run.cfg.train.holdout
    n = max(args.reconstruct or 0, 2000 if args.latent_plot else 1)
    if holdout > 0:
        x, y = held_out_examples(dataset, holdout, n)
    else:
        print(
            "genfw: note: the run holds no data out (train.holdout 0); using training examples",
            file=sys.stderr,
        )
        # A streamed data set is read in order, never indexed: the first n of its first epoch.
        if getattr(dataset, "streaming", False):
            items = list(itertools.islice(dataset.stream(0, 0), n))
        else:
            items = [dataset[i] for i in range(min(n, len(dataset)))]
        x = torch.stack([torch.as_tensor(xi) for xi, _ in items]).float()
        y = torch.tensor([int(yi) for _, yi in items])
    device = run.device
    for mod in modules.values():
        mod.eval()
    paths: list[Path] = []
    with torch.no_grad():
        if args.reconstruct:
            xs = x[: args.reconstruct].to(device)
            rec = model.reconstruct(modules, xs, y[: args.reconstruct].to(device))
            paths.append(run.run_dir / "reconstructions.png")
            images.save_png(images.pairs_grid(xs.cpu(), rec.float().cpu()), paths[-1])
        if args.latent_plot:
            codes = model.encode(modules, x.to(device), y.to(device)).float().cpu()
            if codes.shape[1] != 2:
                raise GenfwError(
                    f"--latent-plot needs a 2-D latent; this run's has {codes.shape[1]} dimensions "
                    f"(train with --plugin.latent_dim 2, or use --traverse)"
                )
            prior = forked(0, device, lambda: model.prior.sample(len(codes), device="cpu"))
            paths.append(run.run_dir / "latent.png")
            images.save_png(images.latent_scatter(codes, y, prior.float()), paths[-1])
        if args.traverse is not None:
            code = model.encode(modules, x[:1].to(device), y[:1].to(device))  # (1, d)
            d = code.shape[1]
            try:
                dims = (
                    list(range(d)) if args.traverse == "all" else [int(t) for t in args.traverse.split(",")]
                )
            except ValueError:
                raise GenfwError(
                    f"--traverse takes dimensions like 0,2,5 or 'all'; got '{args.traverse}'"
                ) from None
            bad = [j for j in dims if not 0 <= j < d]
            if bad or not dims:
                raise GenfwError(f"--traverse: dimension {bad[0] if bad else '(none)'} is not in 0..{d - 1}")
            dims = list(dict.fromkeys(dims))
            values = torch.linspace(
                -args.traverse_range, args.traverse_range, args.traverse_steps, device=device
            )
            z = code.repeat(len(dims) * len(values), 1)
            for i, j in enumerate(dims):
                z[i * len(values) : (i + 1) * len(values), j] = values
            decoded = model.decode(modules, z, None).float().cpu()
            paths.append(run.run_dir / "traversals.png")
            images.save_png(images.traversal_grid(decoded, dims), paths[-1])
    return paths


@genfw.hookimpl
def genfw_register_commands(commands: Commands) -> None:
    commands.extend("eval", configure=configure, run_before=check_options, run_after=pictures)
