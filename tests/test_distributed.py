"""Two CPU processes under ``torchrun`` (gloo): data-parallel training keeps every rank's weights equal.

``genfw train`` writes weights on the main process only, so each rank's own weights come from a
small launcher written next to the run: it wraps ``genfw.train.Trainer.fit`` to save
``trainer.plain`` (the unwrapped modules) before and after training to
``{init,final}-rank{RANK}.safetensors``, then calls the real ``genfw.cli.main`` with the
command-line arguments. Everything else (argument parsing, config resolution, Accelerate, DDP,
the run folder) is the code a user runs with ``torchrun -m genfw train``.

The test fails if a rank drifts (unsynchronised gradients, a per-rank constraint or a
collective skipped on one rank), if nothing trains (weights equal to their initialisation), or
if Accelerate does not actually form a process group (each process would train alone).
``wgan-gp`` is covered because its gradient penalty back-propagates through a gradient of the
DDP-wrapped critic (double backward), a classic DDP failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from genfw.plugins import ENV_LOAD

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


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safetensors.safe_open(str(path), "pt") as f:
        meta = f.metadata()
    return safetensors.torch.load_file(str(path)), meta


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["gan", "wgan-gp"])
def test_two_cpu_processes_keep_identical_weights(tmp_path, variant):
    # --cpu: Accelerate forms a CPU (gloo) process group only when asked to run on the CPU.
    proc, out = torchrun(tmp_path, "--plugin", variant, "--cpu")
    assert proc.returncode == 0, explain(proc)

    assert json.loads((out / "run.json").read_text())["processes"] == 2
    summaries = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1, proc.stdout  # only the main process prints
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "critic/loss" in r] == [5, 10, 15, 20]  # logged once, not per rank
    if variant == "wgan-gp":
        assert all(r["critic/gradient_penalty"] > 0 for r in records if "critic/loss" in r)

    weights = tmp_path / "weights"
    init = [load(weights / f"init-rank{r}.safetensors") for r in (0, 1)]
    final = [load(weights / f"final-rank{r}.safetensors") for r in (0, 1)]
    for rank, (_, meta) in enumerate(final):
        assert meta == {"process_index": str(rank), "num_processes": "2", "step": "20"}

    (init0, _), (init1, _) = init
    (final0, _), (final1, _) = final
    assert init0.keys() == final0.keys() == final1.keys()
    assert any(k.startswith("generator.") for k in final0) and any(k.startswith("critic.") for k in final0)
    for key in final0:
        # Each rank seeds its own stream (seed + rank); DDP broadcasts rank 0's weights at wrap time.
        assert torch.equal(init0[key], init1[key]), f"{key} differs between ranks before training"
        assert torch.equal(final0[key], final1[key]), f"{key} differs between ranks after training"
    for module in ("generator", "critic"):
        changed = [k for k in final0 if k.startswith(module + ".") and not torch.equal(final0[k], init0[k])]
        assert changed, f"no {module} weight changed in 20 steps"

    # The exported generator (main process) is the ranks' generator.
    exported = safetensors.torch.load_file(str(out / "generator.safetensors"))
    assert exported.keys() == {k for k in final0 if k.startswith("generator.")}
    assert all(torch.equal(exported[k], final0[k]) for k in exported)


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="about machines without a GPU")
def test_torchrun_without_cpu_flag_on_a_cpu_only_machine_forms_a_process_group(tmp_path):
    proc, out = torchrun(tmp_path, "--plugin", "gan", "--steps", "2")
    assert proc.returncode == 0, explain(proc)
    assert json.loads((out / "run.json").read_text())["processes"] == 2
