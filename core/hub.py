"""The Hugging Face Hub: ``hf://USER/NAME`` for :func:`genfw.load` (through the hub cache,
offline-first) and ``genfw push RUN USER/NAME`` (an export, uploaded with ``huggingface_hub``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from genfw.errors import GenfwError

if TYPE_CHECKING:
    from genfw.registry import Registry

SCHEME = "hf://"


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a Hub model id (``USER/NAME``), else a one-line refusal."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise GenfwError(
            f"'{repo_id}' is not a Hugging Face Hub repository id; give USER/NAME (e.g. me/vae-digits)"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        first = " ".join(str(exc).split())
        raise GenfwError(
            f"'{repo_id}' is not a Hugging Face Hub repository id ({first}); give USER/NAME"
        ) from None
    return repo_id


def parse(spec: str) -> tuple[str, str | None]:
    """``hf://USER/NAME@REVISION`` as ``(USER/NAME, REVISION or None)``."""
    rest = spec.removeprefix(SCHEME)
    repo_id, at, revision = rest.partition("@")
    if at and not revision:
        raise GenfwError(f"{spec}: give a revision after '@' (a branch, tag or commit) or none")
    return check_repo_id(repo_id), (revision or None)


def snapshot(spec: str, *, download: bool = True) -> Path:
    """The local folder of ``hf://USER/NAME[@REVISION]``: from the hub cache if it is there,
    else downloaded into it, where ``download`` is true and ``HF_HUB_OFFLINE`` is not set."""
    import huggingface_hub
    from huggingface_hub import constants

    repo_id, revision = parse(spec)
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception as exc:  # not in the cache: huggingface_hub's LocalEntryNotFoundError and kin
        if not _not_cached(exc):
            raise GenfwError(
                f"cannot read {spec} from the hub cache: {type(exc).__name__}: {_line(exc)}"
            ) from None
    if not download or constants.HF_HUB_OFFLINE:
        why = "download=False" if not download else "HF_HUB_OFFLINE is set"
        raise GenfwError(
            f"{spec} is not in the hub cache ({constants.HF_HUB_CACHE}) and {why}; "
            f"download it once with a network, or give a local folder"
        )
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, revision=revision))
    except Exception as exc:  # no network, no such repository, no access: one line
        raise GenfwError(f"cannot download {spec}: {type(exc).__name__}: {_line(exc)}") from None


def _not_cached(exc: Exception) -> bool:
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # huggingface_hub < 0.23
        from huggingface_hub.utils import LocalEntryNotFoundError
    return isinstance(exc, (LocalEntryNotFoundError, FileNotFoundError))


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def push(
    source: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool = False,
    message: str | None = None,
    registry: Registry | None = None,
) -> str:
    """Upload run folder ``source`` (exported first, into a temporary folder) or an exported
    folder to the Hub model repository ``repo_id``, creating it where it does not exist; returns
    the commit's URL. Needs a token (``hf auth login`` or ``HF_TOKEN``)."""
    import huggingface_hub
    import huggingface_hub.utils

    from genfw import export

    source = Path(source)
    check_repo_id(repo_id)
    kind = export.folder_kind(source)
    token = huggingface_hub.utils.get_token()
    if not token:
        raise GenfwError(
            "no Hugging Face token: log in with `hf auth login` (or `huggingface-cli login`) or set HF_TOKEN"
        )
    with tempfile.TemporaryDirectory(prefix="genfw-push-") as tmp:
        folder = source
        if kind == "run":
            folder = export.export_run(source, Path(tmp) / "model", repo_id=repo_id, registry=registry)
        api = huggingface_hub.HfApi(token=token)
        try:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=str(folder),
                repo_type="model",
                commit_message=message or f"genfw: upload {source.name}",
            )
        except Exception as exc:  # network, permissions, quota: one line
            raise GenfwError(f"upload to {repo_id} failed: {type(exc).__name__}: {_line(exc)}") from None
    return str(getattr(info, "commit_url", None) or info)
