"""Experiment trackers through Accelerate (``train.log_with``, ``--log-with``): each tracker's run
read back with the tracker's own reader (mlflow's client, wandb's offline run file) against
``metrics.jsonl``, the config and the sample grids; ``--resume`` continuing the same tracker run;
the refusals; TensorBoard, the default, as before."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from genfw import cli, trackers
from genfw.config import resolve
from genfw.errors import GenfwError
from genfw.train import Trainer

# A tiny GAN on toy data: logs at steps 2 and 4, sample grids at 2 and 4, mode coverage at the end.
TINY = (
    "--plugin", "gan", "--dataset", "toy2d", "--batch-size", "16", "--generator.hidden", "[8]",
    "--critic.hidden", "[8]", "--no-progress", "--train.log_every", "2", "--train.sample_every", "2",
    "--metric.mode_coverage.num_samples", "200",
)  # fmt: skip


def one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("genfw: error: "), err
    return lines[0]


def logged(run: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as ``{key: [(step, value), ...]}``, the non-finite values (null) left out."""
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        step = record.pop("step")
        for key, value in record.items():
            if value is not None:
                out.setdefault(key, []).append((step, value))
    return out


@pytest.fixture
def mlflow_env(monkeypatch):
    """No tracking URI and no file-store opt-in from outside: genfw's defaults; mlflow's client."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    yield mlflow
    assert mlflow.active_run() is None  # every run genfw started is ended


def test_mlflow_run_holds_params_scalars_and_grids_and_resume_continues_it(tmp_path, run_cli, mlflow_env):
    from mlflow.tracking import MlflowClient

    run = tmp_path / "g"
    code, _, err = run_cli("train", *TINY, "--steps", "4", "--out", run, "--log-with", "mlflow")
    assert code == 0, err
    assert not (run / "tb").exists()  # mlflow alone: no TensorBoard
    run_id = json.loads((run / "trackers.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())  # a file store in the run folder
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "g"
    assert client.get_experiment(got.info.experiment_id).name == "genfw"
    params = got.data.params  # the resolved config, flattened
    assert params["variant.name"] == "gan" and params["dataset.name"] == "toy2d"
    assert params["train.steps"] == "4" and params["train.batch_size"] == "16"
    assert params["generator.hidden"] == "[8]" and params["loss.name"] == "non_saturating"
    assert params["train.log_with"] == '["mlflow"]'

    def history() -> dict[str, list[tuple[int, float]]]:
        return {
            key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
            for key in client.get_run(run_id).data.metrics
        }

    # Every scalar of metrics.jsonl, at its step, with its value; the non-finite ones (null) not.
    expected = logged(run)
    assert set(expected) >= {"critic/loss", "generator/loss", "time", "mode_coverage/modes"}
    assert [s for s, _ in expected["critic/loss"]] == [2, 4]
    assert history() == expected
    assert "mode_coverage/kl_modes" not in expected  # null in metrics.jsonl: no point in mlflow

    def grids() -> list[str]:
        return sorted(a.path for a in client.list_artifacts(run_id, "samples"))

    assert grids() == ["samples/step_0000002.png", "samples/step_0000004.png"]
    local = Path(client.download_artifacts(run_id, "samples/step_0000004.png", str(tmp_path)))
    assert local.read_bytes() == (run / "samples" / "step_0000004.png").read_bytes()

    # --resume appends to the same run: new steps, new grids; params as they started (immutable).
    code, _, err = run_cli("train", "--resume", run, "--steps", "6", "--no-progress")
    assert code == 0, err
    assert json.loads((run / "trackers.json").read_text())["mlflow"] == run_id
    assert len(client.search_runs([got.info.experiment_id])) == 1
    assert client.get_run(run_id).info.status == "FINISHED"
    assert history() == logged(run)
    assert [s for s, _ in history()["critic/loss"]] == [2, 4, 6]
    assert grids()[-1] == "samples/step_0000006.png"
    assert client.get_run(run_id).data.params["train.steps"] == "4"


def test_mlflow_tracking_uri_from_the_environment(tmp_path, run_cli, mlflow_env, monkeypatch):
    from mlflow.tracking import MlflowClient

    store = tmp_path / "store"
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    run = tmp_path / "g"
    code, _, err = run_cli("train", *TINY, "--steps", "2", "--out", run, "--log-with", "mlflow")
    assert code == 0, err
    assert not (run / "mlruns").exists()
    run_id = json.loads((run / "trackers.json").read_text())["mlflow"]
    metrics = MlflowClient(tracking_uri=store.as_uri()).get_run(run_id).data.metrics
    assert metrics["critic/loss"] == logged(run)["critic/loss"][-1][1]


def test_a_failed_run_ends_its_mlflow_run_as_failed(tmp_path, registry, mlflow_env, monkeypatch):
    from mlflow.tracking import MlflowClient

    def boom(self):
        raise RuntimeError("metric crashed")

    monkeypatch.setattr(Trainer, "evaluate", boom)
    run = tmp_path / "g"
    raw = {
        "variant": "gan",
        "dataset": "toy2d",
        "train": {"steps": 2, "progress": False, "log_with": "mlflow"},
    }
    with pytest.raises(RuntimeError, match="metric crashed"):
        Trainer(resolve(raw, registry), run).fit()
    run_id = json.loads((run / "trackers.json").read_text())["mlflow"]
    assert MlflowClient(tracking_uri=(run / "mlruns").as_uri()).get_run(run_id).info.status == "FAILED"


# --- wandb, offline ---------------------------------------------------------------------------------


def wandb_records(path: Path):
    """The records of a wandb run file (``run-ID.wandb``): a 7-byte header (``:W&B``, magic,
    version), then LevelDB's log format, 32 KiB blocks of chunks each with a 7-byte header
    (CRC, length little-endian, type: 1 full, 2 first, 3 middle, 4 last) and a protobuf ``Record``."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_run(folder: Path) -> dict:
    """What an offline run file holds: run id, project, config, history by key, image files."""
    import wandb

    # wandb's service writes the file after run.finish() returns, at the latest when the process
    # ends (genfw train's does); in-process, teardown waits for it.
    wandb.teardown()
    out: dict = {"config": {}, "history": {}, "images": []}
    for record in wandb_records(next(folder.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["id"], out["project"], out["name"] = (
                record.run.run_id,
                record.run.project,
                record.run.display_name,
            )
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            # A key is "key" or, split at its slashes, "nested_key".
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            out["images"] += row.pop("samples/filenames", [])
            for key, value in row.items():
                if not key.startswith(("_", "samples/")):
                    out["history"].setdefault(key, []).append((record.history.step.num, value))
    return out


def test_wandb_offline_run_holds_config_scalars_and_grids_and_resume_continues_it(
    tmp_path, run_cli, monkeypatch
):
    pytest.importorskip("wandb")
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_RUN_ID", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):  # leave the home folder alone
        monkeypatch.setenv(var, str(tmp_path / "home"))
    run = tmp_path / "g"
    code, out, err = run_cli("train", *TINY, "--steps", "4", "--out", run, "--log-with", "wandb,tensorboard")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["step"] == 4
    assert any((run / "tb").glob("events.out.tfevents.*"))  # both trackers
    (first,) = (run / "wandb").glob("offline-run-*")  # offline: no API key here
    got = wandb_run(first)
    assert got["id"] == json.loads((run / "trackers.json").read_text())["wandb"]
    assert got["project"] == "genfw" and got["name"] == "g"
    assert got["config"]["variant.name"] == "gan" and got["config"]["train.steps"] == 4
    assert got["history"] == logged(run)
    assert len(got["images"]) == 2 and all((first / "files" / f).is_file() for f in got["images"])

    code, _, err = run_cli("train", "--resume", run, "--steps", "6", "--no-progress")
    assert code == 0, err
    second = next(f for f in (run / "wandb").glob("offline-run-*") if f != first)
    resumed = wandb_run(second)
    assert resumed["id"] == got["id"]  # wandb sync joins both files into one run
    assert resumed["config"]["train.steps"] == 6
    assert [s for s, _ in resumed["history"]["critic/loss"]] == [6]


def test_aim_keeps_its_repository_in_the_run_folder_and_resume_continues_its_run(tmp_path, run_cli):
    aim = pytest.importorskip("aim")  # not in [dev]: aim 3's wheels are large
    run = tmp_path / "g"
    code, _, err = run_cli("train", *TINY, "--steps", "4", "--out", run, "--log-with", "aim")
    assert code == 0, err
    run_hash = json.loads((run / "trackers.json").read_text())["aim"]
    # Reading a run's params and metrics back fails with aim 3.29 here (KeyError from
    # Run(hash, read_only=True)["hparams"], also for a run aim's own SDK wrote in a plain script);
    # its list of runs works: one run in RUN/aim, the one genfw recorded, also after --resume.
    assert aim.Repo.from_path(str(run / "aim")).list_all_runs() == [run_hash]
    code, _, err = run_cli("train", "--resume", run, "--steps", "6", "--no-progress")
    assert code == 0, err
    assert aim.Repo.from_path(str(run / "aim")).list_all_runs() == [run_hash]


# --- choosing trackers, and refusals ------------------------------------------------------------------


def test_log_with_takes_a_list_or_names_separated_by_commas(registry):
    def log_with(value):
        return resolve({"train": {"log_with": value}}, registry).train.log_with

    assert log_with("tensorboard") == ["tensorboard"]
    assert log_with("tensorboard, tensorboard") == ["tensorboard", "tensorboard"]
    assert log_with([]) == [] and resolve({}, registry).train.log_with == ["tensorboard"]
    assert cli.parse_overrides(["--log-with", "mlflow,wandb"], []) == [("train.log_with", "mlflow,wandb")]
    assert trackers.chosen(["tensorboard", "tensorboard"]) == ["tensorboard"]
    installed = [t for t in trackers.TRACKERS if trackers.installed(t)]
    assert trackers.chosen(["all"]) == installed and installed[0] == "tensorboard"


def test_unknown_or_missing_trackers_are_refused_in_one_line_before_anything_is_written(
    tmp_path, run_cli, monkeypatch
):
    import accelerate.utils

    run = tmp_path / "g"
    line = one_line_error(
        *run_cli("train", *TINY, "--steps", "2", "--out", run, "--log-with", "tensorboard,neptune")[::2]
    )
    assert "log_with: unknown tracker 'neptune'; valid: tensorboard, mlflow, wandb, aim, all" in line
    line = one_line_error(*run_cli("train", *TINY, "--out", run, "--set", "train.log_with=3")[::2])
    assert "expected a name, names separated by commas, or a list of names, got 3" in line
    for name in ("mlflow", "wandb", "aim"):
        monkeypatch.setattr(accelerate.utils, f"is_{name}_available", lambda: False)
        line = one_line_error(*run_cli("train", *TINY, "--out", run, "--log-with", name)[::2])
        assert line == f"genfw: error: train.log_with: {name} is not installed; pip install 'genfw[{name}]'"
    with pytest.raises(GenfwError, match=r"pip install 'genfw\[mlflow\]'"):
        import genfw

        genfw.train({"variant": "gan"}, out=run, log_with=["tensorboard", "mlflow"])
    assert not run.exists()


def test_tensorboard_stays_the_default_and_an_empty_list_logs_to_metrics_jsonl_alone(tmp_path, run_cli):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "g"
    code, _, err = run_cli("train", *TINY, "--steps", "4", "--out", run)
    assert code == 0, err
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints", "config.yaml", "generator.safetensors", "metrics.jsonl", "run.json", "samples", "tb",
    ]  # fmt: skip
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    expected = logged(run)
    assert [(e.step, e.value) for e in events.Scalars("critic/loss")] == [
        (s, pytest.approx(v, rel=1e-6)) for s, v in expected["critic/loss"]
    ]
    assert "time" not in events.Tags()["scalars"]  # wall-clock time stays in metrics.jsonl
    assert [e.step for e in events.Images("samples")] == [2, 4]

    quiet = tmp_path / "q"
    code, _, err = run_cli("train", *TINY, "--steps", "2", "--out", quiet, "--set", "train.log_with=[]")
    assert code == 0, err
    assert not (quiet / "tb").exists() and not (quiet / "trackers.json").exists()
    assert all(math.isfinite(v) for _, v in logged(quiet)["critic/loss"])
