"""Two CPU processes under ``torchrun`` (gloo): data-parallel training keeps every rank's weights equal.

One torchrun launch covers every variant registered when the tests run: its worker calls the real
``genfw.cli.main(["train", ...])`` once per variant (tiny networks, 4 steps) on both ranks, with
``genfw.train.Trainer.fit`` wrapped to record each rank's weight digests at the start and the end.
Everything else (argument parsing, config resolution, Accelerate, DDP, the run folder) is the code
a user runs with ``torchrun -m genfw train``. The same launch resumes, on two processes, a run one
process wrote; a later test resumes a two-process run on one process.

The tests fail if a rank drifts (unsynchronised gradients, a per-rank constraint or a collective
skipped on one rank), if nothing trains (weights equal to their initialisation), if the run folder
is written per rank, or if Accelerate does not actually form a process group (each process would
train alone). ``wgan-gp`` and ``progan`` back-propagate a gradient penalty through a gradient of
the DDP-wrapped critic (double backward), a classic DDP failure.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml

from genfw.plugins import ENV_LOAD, get_registry

TIMEOUT = 240

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="this torch build has no torch.distributed"
)

LAUNCHER = '''\
"""genfw train, saving each rank's weights before and after training (for tests)."""
import os
import sys

import safetensors.torch

from genfw import cli, train

_fit = train.Trainer.fit


def _dump(trainer, tag):
    acc = trainer.accelerator
    tensors = {
        f"{name}.{key}": value.detach().to("cpu").contiguous().clone()
        for name, module in trainer.plain.items()
        for key, value in module.state_dict().items()
    }
    meta = {"process_index": str(acc.process_index), "num_processes": str(acc.num_processes),
            "step": str(trainer.step)}
    path = os.path.join(os.environ["GENFW_TEST_WEIGHTS"], f"{tag}-rank{os.environ['RANK']}.safetensors")
    safetensors.torch.save_file(tensors, path, metadata=meta)


def fit(self):
    _dump(self, "init")
    result = _fit(self)
    _dump(self, "final")
    return result


train.Trainer.fit = fit
sys.exit(cli.main(sys.argv[1:]))
'''


def torchrun(tmp_path: Path, *train_args: str) -> tuple[subprocess.CompletedProcess, Path]:
    weights = tmp_path / "weights"
    weights.mkdir()
    launcher = tmp_path / "genfw_rank_weights.py"
    launcher.write_text(LAUNCHER)
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != ENV_LOAD}
    env.update(OMP_NUM_THREADS="1", GENFW_TEST_WEIGHTS=str(weights))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # rendezvous on a free port: no clash with a parallel run
        "--nproc_per_node",
        "2",
        "--log-dir",
        str(tmp_path / "torchrun"),  # not a torchelastic_* folder left in /tmp per run
        str(launcher),
        "train",
        "--dataset",
        "toy2d",
        "--dataset.size",
        "4096",
        "--steps",
        "20",
        "--train.log_every",
        "5",
        "--out",
        str(out),
        "--no-progress",
        *train_args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=TIMEOUT)
    return proc, out


def explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="about machines without a GPU")
def test_torchrun_without_cpu_flag_on_a_cpu_only_machine_forms_a_process_group(tmp_path):
    proc, out = torchrun(tmp_path, "--plugin", "gan", "--steps", "2")
    assert proc.returncode == 0, explain(proc)
    assert json.loads((out / "run.json").read_text())["processes"] == 2


# --- every registered variant, one torchrun launch ------------------------------------------------

WORKER = '''\
"""Runs `genfw train` (the CLI, in this process) once per job on every rank; records each rank's
weight digests at the start and the end of each run, and one gathered log."""
import hashlib
import json
import os
import sys
import traceback

import torch

from genfw import cli, train

records = {}
last = []
_fit = train.Trainer.fit


def digest(trainer):
    return {
        f"{name}.{key}": hashlib.sha256(
            value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        ).hexdigest()
        for name, module in trainer.plain.items()
        for key, value in module.state_dict().items()
    }


def fit(self):
    rec = records.setdefault(str(self.run_dir), {})
    rec.update(start=digest(self), start_step=self.step, processes=self.accelerator.num_processes)
    result = _fit(self)
    rec.update(final=digest(self), step=result.step)
    last[:] = [self]
    return result


train.Trainer.fit = fit
rank = int(os.environ["RANK"])
for job in json.loads(open(sys.argv[1]).read()):
    try:
        code = cli.main(job["args"])
    except Exception:
        code = traceback.format_exc()
    records.setdefault(job["out"], {})["exit"] = code
# Logged scalars are means over the processes: rank r logs r and r + 2 (mean r + 1); all read 1.5.
trainer = last[0]
trainer.pending = {"probe": [torch.tensor(float(rank)), torch.tensor(rank + 2.0)]}
records["gathered"] = trainer.flush_logs()
with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as f:
    json.dump(records, f)
'''

VARIANTS = sorted(get_registry().names("variant"))  # whatever is installed when the tests run
# Smaller settings where a variant's defaults are large or its schedule would not show in 4 steps
# (progan counts the images of both processes, 16 a step: 4x4 for one step, then the 8x8 fade-in
# at alpha 0 and 0.5, then 8x8 at alpha 1).
TINY = {
    "progan": {"channels": 16, "min_channels": 8, "latent_dim": 8, "stable_images": 16, "fade_images": 32},
    "sagan": {},
    "stylegan2": {"latent_dim": 8, "w_dim": 8, "mapping_layers": 2, "channel_base": 64, "channel_max": 8},
    "sngan": {"latent_dim": 16, "n_critic": 2},
    "biggan": {"latent_dim": 16, "n_critic": 2},
}
TRAIN = {
    "steps": 4,
    "batch_size": 8,
    "log_every": 1,
    "grid": 4,
    "sample_every": 0,
    "checkpoint_every": 0,
    "progress": False,
}


def tiny_config(variant: str) -> dict:
    factory = get_registry().get("variant", variant).factory
    raw: dict = {"variant": {"name": variant, **TINY.get(variant, {})}, "metrics": {}, "train": dict(TRAIN)}
    for slot, spec in factory.slots.items():
        if spec.kind in ("generator", "critic", "encoder"):
            if spec.default == "mlp":
                raw[slot] = {"name": "mlp", "hidden": [16]}
            elif spec.default in ("sagan", "resnet", "biggan"):
                raw[slot] = {"name": spec.default, "channels": 8}
    return raw


def sha(t: torch.Tensor) -> str:
    return hashlib.sha256(
        t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    ).hexdigest()


def digest_of(modules) -> dict[str, str]:
    return {f"{n}.{k}": sha(v) for n, mod in modules.items() for k, v in mod.state_dict().items()}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, registry):
    """One torchrun launch (2 CPU processes) that trains every registered variant for 4 steps and
    resumes, on 2 processes, a run that 1 process wrote."""
    from genfw.config import resolve
    from genfw.train import Trainer

    tmp = tmp_path_factory.mktemp("every_variant")
    (tmp / "records").mkdir()
    # A 1-process run, to be resumed by 2 processes.
    one = Trainer(resolve(tiny_config("gan"), registry), tmp / "one")
    one.fit()
    one_digest = digest_of(one.plain)
    jobs = []
    for variant in VARIANTS:
        cfg = tmp / f"{variant}.yaml"
        cfg.write_text(yaml.safe_dump(tiny_config(variant)))
        out = str(tmp / "runs" / variant)
        jobs.append(
            {"out": out, "args": ["train", "--config", str(cfg), "--out", out, "--cpu", "--no-progress"]}
        )
    jobs.append(
        {
            "out": str(tmp / "one"),
            "args": ["train", "--resume", str(tmp / "one"), "--steps", "8", "--no-progress"],
        }
    )
    # A 2-process run of 8 steps, and the same run stopped after 4 and resumed on 2 processes.
    eight = tmp / "gan8.yaml"
    eight.write_text(yaml.safe_dump({**tiny_config("gan"), "train": {**TRAIN, "steps": 8}}))
    for out, args in [
        ("straight", ["--config", str(eight)]),
        ("stopped", ["--config", str(tmp / "gan.yaml")]),
        ("stopped", ["--resume", str(tmp / "stopped"), "--steps", "8"]),
    ]:
        run = ["--out", str(tmp / out)] if args[0] == "--config" else []
        jobs.append({"out": str(tmp / out), "args": ["train", *args, *run, "--cpu", "--no-progress"]})
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    (tmp / "worker.py").write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k != ENV_LOAD}
    env.update(OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "--log-dir",
        str(tmp / "torchrun"),
        str(tmp / "worker.py"),
        str(tmp / "jobs.json"),
        str(tmp / "records"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
    ranks = []
    if proc.returncode == 0:
        ranks = [json.loads((tmp / "records" / f"rank{r}.json").read_text()) for r in (0, 1)]
    return {"tmp": tmp, "proc": proc, "ranks": ranks, "one_digest": one_digest}


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_on_two_processes_keeps_identical_weights(two_processes, variant):
    proc = two_processes["proc"]
    assert proc.returncode == 0, explain(proc)
    out = two_processes["tmp"] / "runs" / variant
    recs = [rank[str(out)] for rank in two_processes["ranks"]]
    for rank, rec in enumerate(recs):
        assert rec["exit"] == 0, f"rank {rank}: {rec['exit']}"
        assert rec["processes"] == 2 and rec["step"] == 4
    r0, r1 = recs
    assert r0["start"] == r1["start"], "ranks start from different weights"
    diff = [k for k in r0["final"] if r0["final"][k] != r1["final"][k]]
    assert not diff, f"weights differ between ranks after training: {diff[:5]}"
    modules = {k.split(".", 1)[0] for k in r0["final"]}
    for module in modules:
        changed = [k for k in r0["final"] if k.startswith(module + ".") and r0["final"][k] != r0["start"][k]]
        assert changed, f"{variant}: no weight of '{module}' changed in 4 steps"
    # Written once, by the main process: one log row per step, the config, the exported weights.
    assert json.loads((out / "run.json").read_text())["processes"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if any(k.endswith("/loss") for k in r)] == [1, 2, 3, 4]
    assert all(v is not None for r in rows for v in r.values()), "a logged value is not finite"
    if variant == "progan":
        assert [r["generator/alpha"] for r in rows] == [1.0, 0.0, 0.5, 1.0]
        assert [r["generator/resolution"] for r in rows] == [4.0, 8.0, 8.0, 8.0]
    # A gradient penalty back-propagates through a gradient of the DDP critic (double backward).
    assert all(r["critic/gradient_penalty"] > 0 for r in rows if "critic/gradient_penalty" in r)
    exported = safetensors.torch.load_file(str(out / "generator.safetensors"))
    # The sampling weights: an EMA's average where the variant keeps one (progan), else the live ones.
    final = r0["final"]
    source = {k: "generator_ema.average." + k.split(".", 1)[1] for k in exported}
    assert exported and all(sha(v) == final.get(source[k], final[k]) for k, v in exported.items())


@pytest.mark.slow
def test_logged_scalars_are_averaged_over_processes(two_processes):
    assert two_processes["proc"].returncode == 0, explain(two_processes["proc"])
    assert [r["gathered"] for r in two_processes["ranks"]] == [{"probe": 1.5}, {"probe": 1.5}]


@pytest.mark.slow
def test_a_one_process_checkpoint_resumes_on_two_processes(two_processes):
    assert two_processes["proc"].returncode == 0, explain(two_processes["proc"])
    one = str(two_processes["tmp"] / "one")
    r0, r1 = (rank[one] for rank in two_processes["ranks"])
    assert r0["exit"] == r1["exit"] == 0
    assert r0["start_step"] == r1["start_step"] == 4 and r0["step"] == 8
    assert r0["start"] == r1["start"] == two_processes["one_digest"]  # exactly the saved weights
    assert r0["final"] == r1["final"] != r0["start"]


@pytest.mark.slow
def test_a_two_process_resume_continues_bit_for_bit(two_processes):
    """Each process's random state rides in the checkpoint: stopped at step 4 and resumed on as
    many processes, the run ends on the weights of the run that was never stopped."""
    assert two_processes["proc"].returncode == 0, explain(two_processes["proc"])
    tmp = two_processes["tmp"]
    straight = [rank[str(tmp / "straight")] for rank in two_processes["ranks"]]
    stopped = [rank[str(tmp / "stopped")] for rank in two_processes["ranks"]]
    assert all(r["exit"] == 0 and r["step"] == 8 for r in straight + stopped)
    assert [r["start_step"] for r in stopped] == [4, 4]  # the records of the resumed launch
    assert stopped[0]["final"] == straight[0]["final"] == stopped[1]["final"]


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_on_one_process(two_processes, registry, tmp_path):
    from genfw.train import Trainer, read_run

    assert two_processes["proc"].returncode == 0, explain(two_processes["proc"])
    src = two_processes["tmp"] / "runs" / "gan"
    run = tmp_path / "gan"
    shutil.copytree(src, run)
    trainer = Trainer(read_run(run, registry, [("train.steps", 8)]), run, resume=True)
    assert trainer.step == 4 and trainer.accelerator.num_processes == 1
    assert digest_of(trainer.plain) == two_processes["ranks"][0][str(src)]["final"]
    result = trainer.fit()
    assert result.step == 8 and all(math.isfinite(v) for v in result.last_logs.values())
    assert json.loads((run / "run.json").read_text())["processes"] == 1
