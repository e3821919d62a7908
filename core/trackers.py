"""Experiment trackers through Accelerate: ``train.log_with`` (``--log-with mlflow,wandb``).

The run's :class:`~accelerate.Accelerator` is made with ``log_with`` (:func:`log_with`); on the
main process :func:`start` calls ``accelerator.init_trackers`` with the resolved config, flattened
(:func:`genfw.rundir.flat_config`), as hyper-parameters; ``Trainer.log`` writes ``metrics.jsonl``
and hands the same record to ``accelerator.log`` (the one path of every scalar), ``Trainer.sample_grid``
hands each grid to :func:`log_image`, and :func:`finish` closes the trackers.

- ``tensorboard`` (the default): genfw's own :class:`TensorBoard` tracker, events in ``RUN/tb``
  itself. Accelerate's ``TensorBoardTracker`` writes to ``LOGGING_DIR/PROJECT`` and logs the
  hyper-parameters at the start into a sub-run of their own; genfw's logs them at the end with the
  final metrics (:func:`genfw.rundir.write_hparams`), so the HParams view shows both.
- ``mlflow``: Accelerate's ``MLflowTracker``, into a file store ``RUN/mlruns`` (or
  ``MLFLOW_TRACKING_URI`` where set); sample grids are artifacts ``samples/step_NNNNNNN.png``.
- ``wandb``: Accelerate's ``WandBTracker``, files in ``RUN/wandb``, offline unless ``WANDB_API_KEY``
  or ``WANDB_MODE`` is set.
- ``aim``: Accelerate's ``AimTracker``, its repository in ``RUN/aim``.

Each tracker's run id is kept in ``RUN/trackers.json``, so ``--resume`` continues the same mlflow,
wandb and aim run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from accelerate.tracking import GeneralTracker

from genfw.errors import GenfwError

TRACKERS = ("tensorboard", "mlflow", "wandb", "aim")
ALL = "all"  # tensorboard and every other tracker installed
PROJECT = "genfw"  # mlflow's experiment, wandb's project, aim's run name (Accelerate's choice)
IDS_FILE = "trackers.json"  # {"mlflow": run id, "wandb": run id, "aim": run hash}
TB_DIR, MLFLOW_DIR, AIM_DIR = "tb", "mlruns", "aim"


def names(_: Any, attribute: Any, value: list[str]) -> None:
    """attrs validator of ``train.log_with``: known tracker names (installation is checked by
    :func:`check_installed`, when a config is resolved)."""
    for name in value:
        if name not in (*TRACKERS, ALL):
            raise ValueError(
                f"{attribute.name}: unknown tracker '{name}'; valid: {', '.join((*TRACKERS, ALL))}"
            )


def installed(name: str) -> bool:
    """Whether Accelerate finds the tracker's package (its own test: it drops a tracker it does not)."""
    if name == "tensorboard":
        return True  # a dependency of genfw
    from accelerate.utils import is_aim_available, is_mlflow_available, is_wandb_available

    return {"mlflow": is_mlflow_available, "wandb": is_wandb_available, "aim": is_aim_available}[name]()


def check_installed(log_with: Iterable[str]) -> None:
    """Refuse, in one line naming the pip extra, a tracker whose package is not installed."""
    for name in log_with:
        if name != ALL and not installed(name):
            raise GenfwError(f"train.log_with: {name} is not installed; pip install 'genfw[{name}]'")


def chosen(log_with: Iterable[str]) -> list[str]:
    """The trackers of ``log_with``, in order, once each; ``all``: tensorboard and every other one installed."""
    out: list[str] = []
    for name in log_with:
        for n in [t for t in TRACKERS if installed(t)] if name == ALL else [name]:
            if n not in out:
                out.append(n)
    return out


class TensorBoard(GeneralTracker):
    """TensorBoard events in the run's own ``tb`` folder, as genfw always wrote them: scalars (not
    the wall-clock ``time``), sample grids, and the hyper-parameters with the final metrics at the
    end (:func:`genfw.rundir.write_hparams`, which :meth:`genfw.train.Trainer.fit` calls)."""

    name = "tensorboard"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, folder: Path):
        super().__init__()
        self.folder = Path(folder)
        self.writer: Any = None

    @property
    def tracker(self) -> Any:
        return self.writer

    def start(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.folder))

    def store_init_configuration(self, values: dict[str, Any]) -> None:
        pass  # at the end, with the final metrics: write_hparams

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        for key, value in values.items():
            if key != "time":
                self.writer.add_scalar(key, value, step)

    def log_images(self, values: dict[str, np.ndarray], step: int | None = None, **kwargs: Any) -> None:
        for key, picture in values.items():  # one (H, W, 3) picture per key
            self.writer.add_image(key, picture, step, dataformats="HWC")

    def finish(self) -> None:
        self.writer.close()


def log_with(names: Iterable[str], run_dir: Path) -> list[str | GeneralTracker]:
    """``Accelerator(log_with=...)`` of a run: genfw's :class:`TensorBoard`, the others by name."""
    return [TensorBoard(run_dir / TB_DIR) if n == "tensorboard" else n for n in chosen(names)]


def project_config(run_dir: Path) -> Any:
    """``Accelerator(project_config=...)``: its ``logging_dir`` is where Accelerate puts aim's repository."""
    from accelerate.utils import ProjectConfiguration

    return ProjectConfiguration(logging_dir=str(run_dir / AIM_DIR))


def _read_ids(run_dir: Path) -> dict[str, str]:
    try:
        ids = json.loads((run_dir / IDS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in ids.items() if isinstance(v, str)} if isinstance(ids, dict) else {}


def start(accelerator: Any, run_dir: Path, params: dict[str, Any], *, resume: bool) -> None:
    """Start the trackers of ``accelerator.log_with`` (main process), the hyper-parameters
    ``params`` in each, continuing the run recorded in ``trackers.json`` on ``resume``."""
    # Accelerate holds a tracker given by name as a LoggerType, whose str() is the name.
    wanted = [t.name if isinstance(t, GeneralTracker) else str(t) for t in accelerator.log_with]
    ids = _read_ids(run_dir) if resume else {}
    kwargs: dict[str, dict[str, Any]] = {}
    if "mlflow" in wanted:
        import mlflow

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # mlflow 3 keeps its file store in "maintenance mode", refused unless this is set: it
            # is the store that needs no server or database (the set-up of a run on its own).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (run_dir / MLFLOW_DIR).resolve().as_uri()
        mlflow.set_tracking_uri(uri)  # also over an earlier run's in this process
        kwargs["mlflow"] = {"run_name": run_dir.name, "run_id": ids.get("mlflow")}
    if "wandb" in wanted:
        kwargs["wandb"] = {"dir": str(run_dir), "name": run_dir.name, "resume": "allow"}
        if "wandb" in ids:
            kwargs["wandb"]["id"] = ids["wandb"]
        if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
            kwargs["wandb"]["mode"] = "offline"
    if "aim" in wanted:
        (run_dir / AIM_DIR).mkdir(exist_ok=True)
        kwargs["aim"] = {"run_hash": ids["aim"]} if "aim" in ids else {}
    accelerator.init_trackers(PROJECT, config=None, init_kwargs=kwargs)
    for tracker in accelerator.trackers:
        values = params
        if tracker.name == "mlflow" and ids.get("mlflow"):
            # mlflow's params cannot change: a resumed run keeps those it started with (a new
            # train.steps, say); config.yaml holds the current ones.
            logged = tracker.tracker.data.params
            values = {k: v for k, v in params.items() if k not in logged}
        if values:
            tracker.store_init_configuration(values)
    ids.update(_read_ids(run_dir))
    for tracker in accelerator.trackers:
        if tracker.name == "mlflow":
            ids["mlflow"] = tracker.tracker.info.run_id
        elif tracker.name == "wandb":
            ids["wandb"] = tracker.tracker.id
        elif tracker.name == "aim":
            ids["aim"] = tracker.tracker.hash
    if ids:
        (run_dir / IDS_FILE).write_text(json.dumps(ids, indent=1))


def log_image(accelerator: Any, key: str, picture: np.ndarray, path: Path, step: int) -> None:
    """A sample grid, ``picture`` (H, W, 3) uint8 as saved at ``path``, to every tracker: through
    ``log_images`` where Accelerate's tracker has it, as an artifact ``KEY/FILE.png`` for mlflow."""
    for tracker in accelerator.trackers:
        if tracker.name == "mlflow":
            tracker.log_artifact(str(path), artifact_path=key)
        elif tracker.name == "wandb":
            tracker.log_images({key: [picture]}, step=step)
        elif tracker.name in ("tensorboard", "aim"):
            tracker.log_images({key: picture}, step=step)


def finish(accelerator: Any, error: BaseException | None = None) -> None:
    """Close every tracker (main process); after an ``error`` mlflow's run is marked failed (killed
    on Ctrl-C) and wandb's exits with 1. Not ``accelerator.end_training()``: that also destroys the
    process group, which genfw tears down itself at exit, after a barrier (:mod:`genfw.train`)."""
    for tracker in accelerator.trackers:
        try:
            if error is None:
                tracker.finish()
            elif tracker.name == "mlflow":
                import mlflow

                mlflow.end_run(status="KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
            elif tracker.name == "wandb":
                tracker.tracker.finish(exit_code=1)
            else:
                tracker.finish()
        except Exception:
            if error is None:
                raise
            # After an error, closing is best effort (a tracker that failed to start has nothing
            # to close): the error itself is what the user sees.
    accelerator.trackers.clear()
