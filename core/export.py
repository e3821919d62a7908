"""``genfw export RUN DIR``: a trained run as a folder the Hugging Face Hub takes as a model
repository, which :func:`genfw.load` and ``genfw sample`` read back bit-exactly.

The folder holds:

- ``model.safetensors``: the sampling weights (those of ``generator.safetensors``: the callbacks'
  choice, EMA weights where ``ema`` is on) and, for an autoencoder, its encoder's, keys
  ``<module>.<parameter>``;
- ``config.yaml``: the run's resolved config, which rebuilds the model;
- ``run.json``: the run's record (data shape, distributions and versions of its components),
  without its command line (local paths), plus ``export``: the modules in ``model.safetensors``,
  the step, the genfw that exported it;
- ``samples.png``: a sample grid (``genfw sample DIR --seed 0`` draws it again);
- ``README.md``: the model card, with the Hub's YAML front matter (``library_name: genfw``, tags).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

import genfw
from genfw.errors import GenfwError
from genfw.rundir import CONFIG_FILE, METRICS_FILE, RUN_FILE

if TYPE_CHECKING:
    from genfw.api import Generator
    from genfw.registry import Registry

MODEL_FILE = "model.safetensors"
CARD_FILE = "README.md"
GRID_FILE = "samples.png"
CARD_SEED = 0  # the card's grid: genfw sample DIR --seed 0
POINTS = 2000  # points drawn in a scatter plot (as the run's own plots)


def folder_kind(folder: Path) -> Literal["run", "export"]:
    """``"export"`` for a folder :func:`export_run` wrote, ``"run"`` for a run folder; anything
    else is refused in one line."""
    folder = Path(folder)
    if (folder / CONFIG_FILE).is_file():
        return "export" if (folder / MODEL_FILE).is_file() and _record(folder).get("export") else "run"
    raise GenfwError(
        f"{folder} is not a genfw run folder nor an exported model (no {CONFIG_FILE}); give a folder "
        f"genfw train or genfw export wrote, or hf://USER/NAME"
    )


def _record(folder: Path) -> dict[str, Any]:
    try:
        record = json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def exported_modules(folder: Path) -> tuple[str, ...]:
    """The modules an exported folder's ``model.safetensors`` holds, as its ``run.json`` lists them."""
    names = _record(folder).get("export", {}).get("modules")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise GenfwError(f"{folder / RUN_FILE}: 'export.modules' must list the modules of {MODEL_FILE}")
    return tuple(names)


def export_run(
    run: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    repo_id: str | None = None,
    registry: Registry | None = None,
) -> Path:
    """Write run folder ``run`` as an exported model in ``dest`` (see the module's docstring);
    returns ``dest``. ``repo_id``: the Hub repository the card's loading lines name (default
    ``USER/NAME``). An existing non-empty ``dest`` is replaced only with ``overwrite``, and only
    if it is an exported model; the folder appears whole or not at all."""
    from genfw import api, checkpoint, images

    run, dest = Path(run), Path(dest)
    if folder_kind(run) != "run":
        raise GenfwError(f"{run} is an exported model already; genfw export takes a run folder")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        if not overwrite:
            raise GenfwError(
                f"{dest} already exists; pass --overwrite to replace it or choose another folder"
            )
        if not (dest / MODEL_FILE).is_file() or not _record(dest).get("export"):
            raise GenfwError(
                f"refusing to overwrite {dest}: it is not an exported genfw model; choose another folder"
            )
    gen = api.load(run, registry=registry)
    names = (*gen.model.export, *gen.encoders)
    gen._load_encoders()
    record = _record(run)
    record.pop("command", None)  # local paths
    step = _final_step(run)
    record["export"] = {"modules": list(names), "step": step, "genfw": genfw.__version__}

    tmp = dest.with_name(f".{dest.name}.genfw-export")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        checkpoint.save_weights(tmp / MODEL_FILE, {n: gen.modules[n] for n in names})
        shutil.copyfile(run / CONFIG_FILE, tmp / CONFIG_FILE)
        (tmp / RUN_FILE).write_text(json.dumps(record, indent=1))
        n = POINTS if gen.data.kind == "points" else gen.config.train.grid
        samples, labels = gen.sample_with_labels(n, seed=CARD_SEED)
        images.save_png(images.render(samples, gen.data.kind, labels=labels), tmp / GRID_FILE)
        (tmp / CARD_FILE).write_text(model_card(gen, record, _final_metrics(run), n, repo_id or "USER/NAME"))
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest


def _final_step(run: Path) -> int | None:
    """The step of the run's latest checkpoint (that of ``generator.safetensors``), else the last
    step of its log."""
    from genfw import checkpoint

    try:
        return int(checkpoint.find(run / "checkpoints").name.removeprefix("step_"))
    except GenfwError:
        steps = [r.get("step") for r in _log(run)]
        return max((s for s in steps if isinstance(s, int)), default=None)


def _log(run: Path) -> list[dict[str, Any]]:
    try:
        lines = (run / METRICS_FILE).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _final_metrics(run: Path) -> dict[str, dict[str, Any]]:
    """Each metric of the run's config: its last evaluated values (``key -> value``) in the
    run's log, with its options (``options``) and the step (``step``)."""
    config = yaml.safe_load((run / CONFIG_FILE).read_text()) or {}
    out: dict[str, dict[str, Any]] = {}
    for name, options in (config.get("metrics") or {}).items():
        prefix = f"{name}/"
        for rec in reversed(_log(run)):
            values = {k[len(prefix) :]: v for k, v in rec.items() if k.startswith(prefix)}
            if values:
                out[name] = {"values": values, "options": options or {}, "step": rec.get("step")}
                break
    return out


def _paragraph(obj: Any) -> str:
    """The first paragraph of ``obj``'s docstring, on one line."""
    doc = inspect.getdoc(obj) or ""
    return " ".join(doc.split("\n\n")[0].split())


def _value(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4g}"
    return "n/a" if v is None else str(v)


def _options(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in options.items()) or "defaults"


def model_card(
    gen: Generator, record: dict[str, Any], metrics: dict[str, dict[str, Any]], grid: int, repo_id: str
) -> str:
    """The ``README.md`` of an exported model: YAML front matter for the Hub, then the variant and
    its paper (the first paragraphs of its class's and its module's docstrings), the data set, the training, the final metrics with their extractor, a sample grid,
    the versions, and how to load it."""
    cfg = gen.config
    variant = cfg.variant.component
    config = yaml.safe_load((gen.path / CONFIG_FILE).read_text()) or {}
    dataset = config.get("dataset") or {}
    dataset_name = dataset.get("name", "unknown") if isinstance(dataset, dict) else str(dataset)
    # Tags from the players the variant declares (the core names no variant).
    players = variant.factory.players
    encodes = bool(players.encoders)
    family = [
        *(["autoencoder"] if encodes else []),
        *(["adversarial"] if players.critics or players.latent_critics else []),
    ]
    front: dict[str, Any] = {
        "library_name": "genfw",
        "tags": list(dict.fromkeys(["genfw", "generative-model", *family, variant.name, dataset_name])),
    }
    if gen.data.kind == "image" and not gen.num_classes:
        front["pipeline_tag"] = "unconditional-image-generation"
    data = gen.data
    shape = "x".join(map(str, data.shape))
    classes = f", {data.num_classes} classes" if data.num_classes else ""
    train = cfg.train
    step = record["export"]["step"]
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {variant.name} on {dataset_name}",
        "",
        f"A `{variant.name}` model trained with [genfw](https://pypi.org/project/genfw/) "
        f"for {step if step is not None else 'an unknown number of'} steps.",
        "",
        f"**Variant** `{variant.name}`: {_paragraph(variant.factory)}",
        "",
        f"Its module (`{variant.factory.__module__}`, plugin `{variant.plugin.name}`): "
        f"{_paragraph(inspect.getmodule(variant.factory))}",
        "",
        f"- options: {_options({k: v for k, v in (config.get('variant') or {}).items() if k != 'name'})}",
        f"- components: {', '.join(f'{slot} `{spec.name}`' for slot, spec in cfg.slots.items()) or 'none'}",
        f"- remedies: {', '.join(f'`{n}`' for n in {**cfg.regularisers, **cfg.callbacks}) or 'none'}",
        "",
        f"**Data set** `{dataset_name}` ({_options({k: v for k, v in dataset.items() if k != 'name'} if isinstance(dataset, dict) else {})}): "
        f"{data.kind} of shape {shape}{classes}.",
        "",
        f"**Training**: {step} steps, batch size {train.batch_size}, seed {train.seed}, "
        f"{record.get('processes', 1)} process(es), mixed precision {train.mixed_precision}; "
        f"`config.yaml` is the resolved config (`genfw train --config config.yaml` trains it again).",
        "",
        "## Final metrics",
        "",
    ]
    if metrics:
        lines += ["| metric | value | extractor | step |", "|---|---|---|---|"]
        for name, m in metrics.items():
            extractor = m["options"].get("extractor") or "-"
            for key, value in m["values"].items():
                lines.append(f"| {name}/{key} | {_value(value)} | {extractor} | {m['step']} |")
        lines += ["", "Their options (`config.yaml`, `metrics`):", ""]
        lines += [f"- `{name}`: {_options(m['options'])}" for name, m in metrics.items()]
    else:
        lines.append("The run computed no metrics.")
    lines += [
        "",
        "## Samples",
        "",
        f"![samples]({GRID_FILE})",
        "",
        f"`genfw sample DIR -n {grid} --seed {CARD_SEED}` draws this {'plot' if data.kind == 'points' else 'grid'} again"
        + (" (one row per class)." if gen.num_classes and data.kind != "points" else "."),
        "",
        "## Versions",
        "",
        "| distribution | version |",
        "|---|---|",
        *(f"| {d} | {v} |" for d, v in (record.get("distributions") or {}).items()),
        "",
        f"Exported with genfw {genfw.__version__}.",
        "",
        "## How to load",
        "",
        "```python",
        "import genfw",
        "",
        f'gen = genfw.load("hf://{repo_id}")  # or the folder',
        f"x = gen.sample(16, seed=0)  # a tensor (16, {', '.join(map(str, data.shape))})",
        *(["z = gen.encode(x)  # codes; gen.decode(z) maps them back"] if encodes else []),
        "```",
        "",
        "```bash",
        f"genfw sample hf://{repo_id} -n 64 --seed 0 --out grid.png",
        "```",
        "",
        f"`pip install genfw` and the distributions above that provide its components "
        f"(variant `{variant.name}` comes from {variant.plugin.dist}).",
        "",
    ]
    return "\n".join(lines)
