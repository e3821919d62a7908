"""``genfw export``, ``genfw push`` and ``hf://``: an exported folder is a Hub model repository
that ``genfw.load`` and ``genfw sample`` read back bit-exactly; the upload stops at
``huggingface_hub``'s call, and ``hf://`` reads a hub cache laid out as the Hub's (no network)."""

from __future__ import annotations

import json
import shutil
import types

import huggingface_hub
import huggingface_hub.constants
import huggingface_hub.utils
import numpy as np
import pytest
import safetensors.torch
import torch
import yaml
from PIL import Image

import genfw
from genfw import checkpoint, export

VAE = {
    "variant": {"name": "vae", "latent_dim": 3},
    "dataset": "digits",
    "encoder": {"name": "mlp", "hidden": [16]},
    "generator": {"name": "mlp", "hidden": [16]},
    # The metrics a card reports, one with a feature extractor (raw pixels: no weights to install).
    "metrics": {"autoencoding": {"num_examples": 200}, "fid": {"extractor": "raw", "num_samples": 100}},
    "train": {"steps": 4, "batch_size": 16, "log_every": 2, "grid": 16, "progress": False},
}
FILES = ["README.md", "config.yaml", "model.safetensors", "run.json", "samples.png"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny VAE run and its export."""
    root = tmp_path_factory.mktemp("export")
    run = genfw.train(VAE, out=root / "run").path
    dest = root / "exported"
    assert export.export_run(run, dest) == dest
    return run, dest


def test_export_reads_back_bit_exactly(exported, run_cli, tmp_path):
    run, dest = exported
    assert sorted(p.name for p in dest.iterdir()) == FILES
    assert (dest / "config.yaml").read_bytes() == (run / "config.yaml").read_bytes()
    from_run, from_export = genfw.load(run), genfw.load(dest)
    assert torch.equal(from_export.sample(9, seed=4), from_run.sample(9, seed=4))
    x = from_run.sample(6, seed=0)
    assert torch.equal(from_export.encode(x), from_run.encode(x))
    z = torch.randn(3, 3)
    assert torch.equal(from_export.decode(z), from_run.decode(z))
    # model.safetensors: the sampling weights (generator.safetensors's) and the encoder's.
    weights = safetensors.torch.load_file(str(dest / "model.safetensors"))
    sampling = safetensors.torch.load_file(str(run / "generator.safetensors"))
    assert {k for k in weights if k.startswith("generator.")} == set(sampling)
    assert all(torch.equal(weights[k], v) for k, v in sampling.items())
    _, state = checkpoint.load(checkpoint.find(run / "checkpoints"))
    encoder = {f"encoder.{k}": v for k, v in state["modules"]["encoder"].items()}
    assert {k for k in weights if not k.startswith("generator.")} == set(encoder)
    assert all(torch.equal(weights[k], v) for k, v in encoder.items())
    # genfw sample DIR = genfw sample RUN, bit for bit.
    for name, folder in (("run", run), ("export", dest)):
        code, _, err = run_cli(
            "sample", folder, "-n", "9", "--seed", "4", "--out", tmp_path / f"{name}.safetensors"
        )
        assert code == 0, err
    a, b = (
        safetensors.torch.load_file(str(tmp_path / f"{n}.safetensors"))["samples"] for n in ("run", "export")
    )
    assert torch.equal(a, b)
    # The card's picture is genfw sample DIR -n 16 --seed 0.
    code, _, err = run_cli("sample", dest, "-n", "16", "--seed", "0", "--out", tmp_path / "grid.png")
    assert code == 0, err
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "grid.png")), np.asarray(Image.open(dest / "samples.png"))
    )


def test_model_card(exported):
    run, dest = exported
    text = (dest / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "genfw"
    assert front["tags"] == ["genfw", "generative-model", "autoencoder", "vae", "digits"]
    assert front["pipeline_tag"] == "unconditional-image-generation"
    assert "Kingma & Welling" in text  # the paper, from the variant's docstring
    assert "trained with [genfw]" in text and "for 4 steps" in text and "batch size 16" in text
    assert "`digits`" in text and "image of shape 1x8x8, 10 classes" in text
    # The final metrics, each with its extractor, as the run logged them at its last step.
    final = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert f"| fid/fid | {final['fid/fid']:.4g} | raw | 4 |" in text
    assert f"| autoencoding/reconstruction | {final['autoencoding/reconstruction']:.4g} | - | 4 |" in text
    assert '- `fid`: extractor="raw", weights="", extractor_options={}, num_samples=100' in text
    assert f"| genfw | {genfw.__version__} |" in text
    assert 'genfw.load("hf://USER/NAME")' in text and "z = gen.encode(x)" in text
    record = json.loads((dest / "run.json").read_text())
    assert record["export"] == {"modules": ["generator", "encoder"], "step": 4, "genfw": genfw.__version__}
    assert "command" not in record and record["data"]["shape"] == [1, 8, 8]


def test_export_of_an_ema_run_holds_the_averaged_generator(tmp_path, run_cli):
    run, dest = tmp_path / "run", tmp_path / "out"
    code, _, err = run_cli(
        "train", "--plugin", "gan", "--dataset", "toy2d", "--steps", "3", "--out", run, "--regulariser", "ema",
        "--regulariser.ema.warmup", "false", "--generator.hidden", "[8]", "--critic.hidden", "[8]",
        "--no-progress", "--no-default-metrics",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli("export", run, dest)
    assert code == 0 and out.strip() == str(dest), err
    weights = safetensors.torch.load_file(str(dest / "model.safetensors"))
    _, state = checkpoint.load(checkpoint.find(run / "checkpoints"))
    average = state["modules"]["generator_ema"]
    live = state["modules"]["generator"]
    assert set(weights) == {f"generator.{k}" for k in live}
    key = next(k for k in live if k.endswith("weight"))
    assert torch.equal(weights[f"generator.{key}"], average[f"average.{key}"])
    assert not torch.equal(weights[f"generator.{key}"], live[key])
    text = (dest / "README.md").read_text()
    assert "The run computed no metrics." in text and "remedies: `ema`" in text
    assert "pipeline_tag" not in text  # points, not images
    tags = yaml.safe_load(text.split("---\n")[1])["tags"]
    assert tags == ["genfw", "generative-model", "adversarial", "gan", "toy2d"]
    assert torch.equal(genfw.load(dest).sample(5, seed=2), genfw.load(run).sample(5, seed=2))


def test_eval_of_an_export_gives_the_runs_metrics(exported, run_cli, tmp_path):
    """genfw eval DIR reads an exported folder's model.safetensors (no checkpoint there): its
    metrics, the encoder's included, are the run's, and only eval.json is added to the folder."""
    run, dest = exported
    copy = tmp_path / "exported"
    shutil.copytree(dest, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    results = []
    for folder in (run, copy):
        code, out, err = run_cli(
            "eval", folder, "--metric", "autoencoding", "--metric.fid.extractor", "raw",
            "--metric.fid.num_samples", "100",
        )  # fmt: skip
        assert code == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0] == results[1]
    assert {"fid/fid", "autoencoding/reconstruction", "autoencoding/elbo"} <= set(results[1])
    assert json.loads((copy / "eval.json").read_text()) == results[1]
    assert {p.name: p.read_bytes() for p in copy.iterdir() if p.name != "eval.json"} == before


def test_export_refusals(exported, run_cli, tmp_path):
    run, dest = exported

    def refused(*args: object) -> str:
        code, _, err = run_cli(*args)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        return err

    assert "already exists; pass --overwrite" in refused("export", run, dest)
    assert "is an exported model already" in refused("export", dest, tmp_path / "again")
    assert "is an exported model, not a run folder" in refused("train", "--resume", dest, "--steps", "8")
    assert "is not a genfw run folder nor an exported model" in refused("export", tmp_path, tmp_path / "x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert "refusing to overwrite" in refused("export", run, tmp_path / "mine", "--overwrite")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    copy = tmp_path / "copy"
    shutil.copytree(dest, copy)
    code, _, err = run_cli("export", run, copy, "--overwrite")  # an export is replaced
    assert code == 0, err and sorted(p.name for p in copy.iterdir()) == FILES


# --- push ------------------------------------------------------------------------------------------


@pytest.fixture
def hub_calls(monkeypatch):
    """huggingface_hub's token and upload calls, recorded instead of made."""
    calls: list[tuple[str, dict]] = []
    monkeypatch.setattr(huggingface_hub.utils, "get_token", lambda: "hf_test")

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", {"repo_id": repo_id, "token": self.token, **kw}))

    def upload_folder(self, **kw):
        folder = kw["folder_path"]
        from pathlib import Path

        files = {p.name: p.read_bytes() for p in Path(folder).iterdir()}
        calls.append(("upload_folder", {**kw, "files": files}))
        return types.SimpleNamespace(commit_url=f"https://huggingface.co/{kw['repo_id']}/commit/abc")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def test_push_uploads_the_export(exported, hub_calls, run_cli):
    run, dest = exported
    code, out, err = run_cli("push", run, "me/vae-digits", "--private")
    assert code == 0, err
    assert out.strip() == "https://huggingface.co/me/vae-digits/commit/abc"
    (create, kw1), (upload, kw2) = hub_calls
    assert create == "create_repo" and kw1 == {
        "repo_id": "me/vae-digits", "token": "hf_test", "repo_type": "model", "private": True, "exist_ok": True,
    }  # fmt: skip
    assert upload == "upload_folder" and kw2["repo_id"] == "me/vae-digits" and kw2["repo_type"] == "model"
    files = kw2["files"]
    assert sorted(files) == FILES
    assert files["model.safetensors"] == (dest / "model.safetensors").read_bytes()
    assert 'genfw.load("hf://me/vae-digits")' in files["README.md"].decode()
    # An exported folder is uploaded as it is.
    hub_calls.clear()
    code, _, err = run_cli("push", dest, "me/vae-digits")
    assert code == 0, err and hub_calls[1][1]["folder_path"] == str(dest)


def test_push_refusals(exported, hub_calls, monkeypatch, run_cli, tmp_path):
    run, _ = exported
    code, _, err = run_cli("push", tmp_path, "me/vae-digits")
    assert code == 2 and "is not a genfw run folder nor an exported model" in err, err
    for repo, why in (
        ("vae-digits", "give USER/NAME"),
        ("me/bad name", "is not a Hugging Face Hub repository id"),
    ):
        code, _, err = run_cli("push", run, repo)
        assert code == 2 and why in err and len(err.strip().splitlines()) == 1, err

    def refused_upload(self, **kw):
        raise OSError("connection refused\nby the proxy")

    with monkeypatch.context() as m:
        m.setattr(huggingface_hub.HfApi, "upload_folder", refused_upload)
        code, _, err = run_cli("push", run, "me/vae-digits")
        assert (
            err == "genfw: error: upload to me/vae-digits failed: OSError: connection refused by the proxy\n"
        )
    hub_calls.clear()
    monkeypatch.setattr(huggingface_hub.utils, "get_token", lambda: None)
    code, _, err = run_cli("push", run, "me/vae-digits")
    assert code == 2 and "no Hugging Face token" in err, err
    assert hub_calls == []  # nothing was uploaded


# --- hf:// -----------------------------------------------------------------------------------------


def test_hf_reads_the_hub_cache(exported, monkeypatch, run_cli, tmp_path):
    """A cache laid out as huggingface_hub's: models--USER--NAME/refs/main names a snapshot."""
    _, dest = exported
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--me--vae-digits"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(dest, repo / "snapshots" / commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    gen = genfw.load("hf://me/vae-digits", download=False)
    assert gen.path == repo / "snapshots" / commit
    assert torch.equal(gen.sample(7, seed=1), genfw.load(dest).sample(7, seed=1))
    assert torch.equal(
        genfw.load(f"hf://me/vae-digits@{commit}", download=False).sample(7, seed=1), gen.sample(7, seed=1)
    )
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("sample", "hf://me/vae-digits", "-n", "4")
    assert code == 0 and out.strip() == "sample-seed0-n4.png" and (tmp_path / out.strip()).is_file(), err
    # Not in the cache and no download allowed: one line.
    with pytest.raises(
        genfw.GenfwError, match=r"^hf://me/other is not in the hub cache .* and download=False"
    ):
        genfw.load("hf://me/other", download=False)


def test_hf_is_offline_first(exported, monkeypatch):
    """The cache first (local_files_only), a download only when it misses."""
    _, dest = exported
    from huggingface_hub.utils import LocalEntryNotFoundError

    calls = []

    def snapshot_download(repo_id, **kw):
        calls.append((repo_id, kw))
        if kw.get("local_files_only"):
            raise LocalEntryNotFoundError("not cached")
        return str(dest)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    gen = genfw.load("hf://me/vae-digits@v1")
    assert gen.path == dest
    assert calls == [
        ("me/vae-digits", {"revision": "v1", "local_files_only": True}),
        ("me/vae-digits", {"revision": "v1"}),
    ]
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(genfw.GenfwError, match=r"is not in the hub cache .* and HF_HUB_OFFLINE is set"):
        genfw.load("hf://me/vae-digits")

    def failing(repo_id, **kw):
        if kw.get("local_files_only"):
            raise LocalEntryNotFoundError("not cached")
        raise OSError("network is unreachable\nretry later")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(
        genfw.GenfwError,
        match=r"^cannot download hf://me/vae-digits: OSError: network is unreachable retry later$",
    ):
        genfw.load("hf://me/vae-digits")
    for bad in ("hf://vae", "hf://me/vae@", "hf://me/a b"):
        with pytest.raises(genfw.GenfwError) as info:
            genfw.load(bad)
        assert "\n" not in str(info.value)


# --- every variant ---------------------------------------------------------------------------------


def _variants():
    from genfw.plugins import get_registry

    return sorted(get_registry().names("variant"))


@pytest.mark.parametrize("variant", _variants())
def test_every_variant_exports_bit_exactly(variant, tmp_path):
    """One step of each registered variant on the digits, exported: the same samples (and labels,
    and codes for an autoencoder) from the export as from the run folder."""
    run = genfw.train(
        {"variant": variant, "dataset": "digits"},
        out=tmp_path / "run",
        steps=1,
        batch_size=16,
        grid=16,
        progress=False,
        default_metrics=False,
    )
    dest = export.export_run(run.path, tmp_path / "export")
    from_run, from_export = genfw.load(run.path), genfw.load(dest)
    a, labels_a = from_run.sample_with_labels(6, seed=3)
    b, labels_b = from_export.sample_with_labels(6, seed=3)
    assert torch.equal(a, b)
    assert (labels_a is None and labels_b is None) or torch.equal(labels_a, labels_b)
    assert from_export.encoders == from_run.encoders
    if from_run.encoders:
        assert torch.equal(from_export.encode(a), from_run.encode(a))
