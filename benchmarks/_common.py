"""What several benchmarks share: the classifier that scores them (``genfw train-evaluator``), and
whether a remedy they name is registered."""

from __future__ import annotations

from pathlib import Path

from genfw import cli


def digits_evaluator(
    workdir: Path, given: str | None = None, dataset: str = "digits", options: dict | None = None
) -> str | None:
    """A classifier's weights for classifier FID and precision/recall: ``given`` (a path), none for
    ``"none"``, or one trained here on ``dataset`` (with its ``options``) into ``workdir``
    (``"auto"`` or ``None``); None where the command fails."""
    if given == "none":
        return None
    if given not in (None, "auto"):
        return given
    out = Path(workdir) / f"classifier-{dataset}.safetensors"
    argv = ["train-evaluator", "--dataset", dataset, "--out", str(out), "--no-progress"]
    for k, v in (options or {}).items():
        argv += [f"--dataset.{k}", str(v)]
    code = cli.main(argv)
    return str(out) if code == 0 and out.is_file() else None


def classifier_metrics(weights: str, n: int = 1797) -> dict[str, dict]:
    """Metrics options: FID and precision/recall in the classifier's feature space, on ``n`` samples."""
    feats = {"extractor": "classifier", "weights": weights, "num_samples": n, "progress": False}
    return {"fid": dict(feats), "precision_recall": dict(feats)}


def is_remedy(registry, name: str) -> bool:
    """Whether ``name`` is registered as a remedy: a regulariser or a callback (both are attached as
    ``--regulariser NAME``)."""
    return name in registry.names("regulariser") or name in registry.names("callback")
