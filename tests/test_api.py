"""The Python API as a notebook uses it: ``genfw.train`` and ``genfw.load`` only (plus the CLI it
must agree with)."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch

import genfw
from genfw import checkpoint
from genfw.rundir import json_safe
from tests.conftest import QUICK

# A tiny VAE on the digits: 4 steps of 16-unit networks, its metrics (autoencoding) at the end.
VAE = {
    "variant": {"name": "vae", "latent_dim": 3},
    "dataset": "digits",
    "encoder": {"name": "mlp", "hidden": [16]},
    "generator": {"name": "mlp", "hidden": [16]},
    "train": {"steps": 4, "batch_size": 16, "log_every": 2, "grid": 16, "progress": False},
}
GAN_FLAGS = ("--generator.hidden", "[16]", "--critic.hidden", "[16]")


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    return genfw.train(VAE, out=tmp_path_factory.mktemp("api") / "vae", seed=3)


def test_notebook_trains_samples_and_reloads(vae_run, tmp_path):
    run = vae_run
    assert isinstance(run, genfw.Run) and run.step == 4 and (run.path / "config.yaml").is_file()
    assert (
        "train:" in (run.path / "config.yaml").read_text()
        and "seed: 3" in (run.path / "config.yaml").read_text()
    )
    # The final metrics: the autoencoders' image preset evaluates `autoencoding` at the end.
    assert run.metrics and all(k.startswith("autoencoding/") for k in run.metrics)
    assert run.metrics == {
        k: v
        for k, v in json.loads((run.path / "metrics.jsonl").read_text().splitlines()[-1]).items()
        if "/" in k
    }
    assert "autoencoder/loss" in run.logs

    gen = run.load()
    a = gen.sample(10, seed=7)
    assert a.shape == (10, 1, 8, 8) and a.dtype == torch.float32 and a.device.type == "cpu"
    again = genfw.load(run.path)  # reloaded from the folder: the same samples, bit for bit
    assert torch.equal(again.sample(10, seed=7), a)
    assert torch.equal(genfw.load(run).sample(10, seed=7), a)  # a Run is a path too
    assert not torch.equal(gen.sample(10, seed=8), a)
    # seed=None draws from torch's global stream: seeding it first gives the seeded draw.
    torch.manual_seed(7)
    assert torch.equal(gen.sample(10), a)
    # The global stream is untouched by a seeded draw.
    torch.manual_seed(0)
    gen.sample(3, seed=1)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after)
    assert gen.to("cpu") is gen and gen.variant == "vae" and gen.num_classes == 0


def test_autoencoder_encode_decode(vae_run):
    gen = genfw.load(vae_run.path)
    x = gen.sample(5, seed=0)
    z = gen.encode(x)
    assert z.shape == (5, 3)
    # encode() uses the encoder of the latest checkpoint (generator.safetensors holds the decoder
    # only): mu = the first latent_dim outputs of the trained encoder, by hand.
    _, state = checkpoint.load(checkpoint.find(vae_run.path / "checkpoints"))
    enc = state["modules"]["encoder"]
    assert sorted(enc) == ["head.bias", "head.weight", "net.0.bias", "net.0.weight"]  # 64 -> 16 -> 2 * 3
    h = torch.nn.functional.leaky_relu(x.flatten(1) @ enc["net.0.weight"].T + enc["net.0.bias"], 0.2)
    out = h @ enc["head.weight"].T + enc["head.bias"]  # (5, 6): mu, then log-variances
    torch.testing.assert_close(z, out[:, :3])
    # decode(z) is the decoder's mean; its output is the data's shape.
    rec = gen.decode(z)
    assert rec.shape == (5, 1, 8, 8)
    # sample() = decode of prior draws: the same noise through decode gives the same images.
    torch.manual_seed(11)
    noise = torch.randn(4, 3)
    torch.testing.assert_close(gen.decode(noise), gen.sample(4, seed=11), rtol=0, atol=0)


def test_api_and_cli_make_the_same_run(tmp_path, run_cli):
    """genfw.train with keywords resolves exactly as genfw train with the same flags."""
    by_api = genfw.train(
        {"dataset": "toy2d"},
        out=tmp_path / "api",
        plugin="gan",
        steps=3,
        generator__hidden=[16],
        critic__hidden=[16],
        regulariser="ema",
        log_every=5,
        grid=16,
        progress=False,
    )
    code, out, err = run_cli(
        "train", "--plugin", "gan", "--dataset", "toy2d", "--steps", "3", "--out", tmp_path / "cli",
        *GAN_FLAGS, "--regulariser", "ema", *QUICK,
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "cli" / "config.yaml").read_text() == (by_api.path / "config.yaml").read_text()
    # What genfw train prints is the Run's summary (NaN as null, as JSON has no NaN).
    assert json.loads(out.splitlines()[-1]) == json_safe(by_api.summary()) | {"run": str(tmp_path / "cli")}
    # The same seed: the same weights, so the same samples.
    a = genfw.load(by_api.path).sample(50, seed=1)
    assert torch.equal(genfw.load(tmp_path / "cli").sample(50, seed=1), a)


def test_cli_sample_is_the_api_sample(tmp_path, run_cli):
    """genfw sample --seed S and Generator.sample(seed=S): the same tensors; a conditional
    model's labels as genfw sample draws them (one block per class)."""
    run = tmp_path / "cgan"
    code, _, err = run_cli(
        "train", "--plugin", "cgan", "--steps", "2", "--out", run, *GAN_FLAGS, "--batch-size", "16", *QUICK
    )
    assert code == 0, err
    gen = genfw.load(run)
    assert gen.num_classes == 10
    for label, name in ((None, "all"), (3, "three")):
        args = ["--label", str(label)] if label is not None else []
        code, _, err = run_cli(
            "sample", run, "-n", "12", "--seed", "5", *args, "--out", tmp_path / f"{name}.safetensors"
        )
        assert code == 0, err
        cli = safetensors.torch.load_file(str(tmp_path / f"{name}.safetensors"))
        samples, labels = gen.sample_with_labels(12, label, seed=5)
        assert torch.equal(cli["samples"], samples) and torch.equal(cli["labels"], labels)
        assert torch.equal(gen.sample(12, labels=label, seed=5), samples)
    assert labels.tolist() == [3] * 12
    assert gen.sample_with_labels(12)[1].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_resume_through_the_api(vae_run, tmp_path):
    import shutil

    folder = tmp_path / "vae"
    shutil.copytree(vae_run.path, folder)
    run = genfw.train(resume=folder, steps=6)
    assert run.step == 6 and run.path == folder
    with pytest.raises(genfw.GenfwError, match=r"^on resume only train options may change .*got variant$"):
        genfw.train(out=folder, resume=True, steps=8, variant="gan")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda r: genfw.load(r.path).encode(torch.zeros(2, 1, 8, 8)), None),  # no error: the VAE encodes
        (
            lambda r: genfw.load(r.path).encode(torch.zeros(2, 64)),
            r"^x must be a tensor of shape \(B, 1, 8, 8\)",
        ),
        (lambda r: genfw.load(r.path).sample(0), r"^n must be at least 1, got 0$"),
        (lambda r: genfw.load(r.path).sample(2, seed=-1), r"^seed must be in"),
        (
            lambda r: genfw.load(r.path).sample(2, labels=1),
            r"^label 1 given, but this model is unconditional",
        ),
        (lambda r: genfw.load(r.path / "samples"), r"is not a genfw run folder nor an exported model"),
        (lambda r: genfw.load(r.path).to("gpu"), r"^unknown device 'gpu'"),
        (lambda r: genfw.train(3), r"^config must be a mapping or the path of a \.yaml"),
        (lambda r: genfw.train({"variant": "vae"}, stpes=3), r"^unknown config key 'stpes'"),
        (lambda r: genfw.train(resume=True), r"^resume=True needs the run folder"),
        (lambda r: genfw.train(VAE, out=r.path), r"already exists"),
        (lambda r: genfw.train(VAE, regulariser=3), r"^regulariser= takes a name or a list of names"),
    ],
)
def test_refusals_are_one_line(vae_run, call, message):
    if message is None:
        call(vae_run)
        return
    with pytest.raises(genfw.GenfwError, match=message) as info:
        call(vae_run)
    assert "\n" not in str(info.value)


def test_gan_refuses_encode_and_decode(tmp_path):
    config = tmp_path / "gan.yaml"  # a config file, as genfw train --config reads it
    config.write_text("variant: gan\ndataset: toy2d\n")
    run = genfw.train(
        config,
        out=tmp_path / "g",
        steps=1,
        generator__hidden=[8],
        critic__hidden=[8],
        progress=False,
        default_metrics=False,
    )
    assert run.metrics == {} and "name: toy2d" in (run.path / "config.yaml").read_text()
    gen = run.load()
    assert gen.sample(4, seed=0).shape == (4, 2)
    for call in (lambda: gen.encode(torch.zeros(2, 2)), lambda: gen.decode(torch.zeros(2, 2))):
        with pytest.raises(
            genfw.GenfwError,
            match=r"needs an autoencoder; this model's variant 'gan' has no encoder \(variants with one: .*vae",
        ) as info:
            call()
        assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="about a machine without CUDA")
def test_to_an_absent_device_is_one_line(vae_run):
    gen = genfw.load(vae_run.path)
    with pytest.raises(genfw.GenfwError, match=r"^cannot move the model to cuda: ") as info:
        gen.to("cuda")
    assert "\n" not in str(info.value) and gen.device.type == "cpu"
    assert gen.sample(2, seed=0).shape == (2, 1, 8, 8)
