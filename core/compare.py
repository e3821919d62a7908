"""``genfw compare RUN [RUN ...]``: final metrics side by side, and one metric over steps.

Reads each run folder's ``metrics.jsonl`` (every logged record: training scalars every
``log_every`` steps, metrics after each evaluation). The *final* value of a key is its last
logged value. The plot draws one chosen key over steps for every run (Pillow, no matplotlib).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from genfw.errors import GenfwError, choices

METRICS_FILE = "metrics.jsonl"


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl``; a folder without one is a :class:`GenfwError`."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise GenfwError(f"{run_dir} is not a genfw run folder with metrics (no {METRICS_FILE})")
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            raise GenfwError(f"{path}, line {i}: not a JSON record") from None
    return records


def _value(v: Any) -> float:
    return float("nan") if v is None else float(v)


def series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of ``key`` over the records that have it (``null`` reads as NaN)."""
    pts = [(float(r["step"]), _value(r[key])) for r in records if key in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def final_values(records: list[dict[str, Any]]) -> dict[str, float]:
    """The last logged value of every key (but ``step`` and ``time``), and the last ``step``."""
    out: dict[str, float] = {}
    for r in records:
        for k, v in r.items():
            if k not in ("step", "time"):
                out[k] = _value(v)
    if records:
        out["step"] = float(records[-1]["step"])
    return out


def labels_for(runs: list[Path]) -> list[str]:
    """Short labels: folder names, or full paths where two folders share a name."""
    names = [Path(r).name for r in runs]
    if len(set(names)) == len(names):
        return names
    return [str(r) for r in runs]


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if math.isnan(v):
        return "nan"
    if float(v).is_integer() and abs(v) < 1e9:
        return str(int(v))
    return f"{v:.4g}"


def table(labels: list[str], finals: list[dict[str, float]]) -> str:
    """One row per key, one column per run; ``-`` where a run never logged the key."""
    keys = sorted({k for f in finals for k in f}, key=lambda k: (k != "step", "/" not in k, k))
    header = ["key", *labels]
    rows = [[k, *(_fmt(f.get(k)) for f in finals)] for k in keys]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def default_metric(all_records: list[list[dict[str, Any]]]) -> str:
    """The key to plot when none is named: an evaluated metric logged by every run if there is
    one (e.g. ``mode_coverage/modes``), otherwise the first ``*/loss`` key they share."""
    shared = None
    for records in all_records:
        keys = {k for r in records for k in r if k not in ("step", "time")}
        shared = keys if shared is None else shared & keys
    shared = shared or set()
    if not shared:
        raise GenfwError("the runs share no logged key to plot; name one with --metric KEY")
    evaluated = sorted(k for k in shared if not k.endswith("/loss") and "/" in k and _is_eval(k, all_records))
    losses = sorted(k for k in shared if k.endswith("/loss"))
    return (evaluated or losses or sorted(shared))[0]


def _is_eval(key: str, all_records: list[list[dict[str, Any]]]) -> bool:
    # Training scalars are logged with the phase losses; evaluated metrics in records without them.
    return all(not any(k.endswith("/loss") for k in r) for recs in all_records for r in recs if key in r)


def compare(
    runs: list[Path], *, metric: str | None = None, out: Path | None = None, overwrite: bool = False
) -> tuple[str, Path, str]:
    """Read ``runs``, write the plot of ``metric`` to ``out``; return ``(table, out, metric)``."""
    from genfw import images

    if not runs:
        raise GenfwError("name at least one run folder: genfw compare RUN [RUN ...]")
    all_records = [read_records(r) for r in runs]
    labels = labels_for(runs)
    metric = metric or default_metric(all_records)
    logged = sorted({k for recs in all_records for r in recs for k in r if k not in ("step", "time")})
    if metric not in logged:
        raise GenfwError(f"no run logged '{metric}'; logged keys: {choices(logged)}")
    out = Path(out) if out else Path(f"compare-{metric.replace('/', '_')}.png")
    if out.suffix != ".png":
        raise GenfwError(f"--out {out}: the plot is a PNG; give a path ending in .png")
    if out.exists() and not overwrite:
        raise GenfwError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    data = {label: series(recs, metric) for label, recs in zip(labels, all_records, strict=True)}
    picture = images.line_plot(data, title=metric)
    images.save_png(picture, out)
    text = table(labels, [final_values(recs) for recs in all_records])
    return text, out, metric
