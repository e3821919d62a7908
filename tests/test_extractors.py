"""Feature extractors (inception, classifier, raw) and the metrics wired to runs and image files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

import genfw
from genfw import scoring
from genfw_plugins.extractors import inception as inc
from genfw_plugins.extractors._common import sha256_file
from genfw_plugins.metrics import quality as q
from tests.conftest import QUICK


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(inc.ENV_WEIGHTS, raising=False)


# --- inception ---------------------------------------------------------------------------------------


def test_inception_has_the_fid_layout():
    net = inc.FIDInceptionV3()
    # pytorch-fid's fid_inception_v3(): torchvision's Inception-v3 without the auxiliary head,
    # 1008 classes: 27,161,264 (torchvision, aux, 1000 classes) - 3,326,696 (aux) + 16,392 (8 more
    # classes) parameters.
    assert sum(p.numel() for p in net.parameters()) == 23_850_960
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Conv2d_1a_3x3.bn.running_var"] == (32,)
    assert shapes["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
    assert shapes["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert shapes["Mixed_7a.branch7x7x3_4.conv.weight"] == (192, 192, 3, 3)
    assert shapes["Mixed_7c.branch3x3dbl_3b.conv.weight"] == (384, 384, 3, 1)
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    assert shapes["fc.weight"] == (1008, 2048) and shapes["fc.bias"] == (1008,)
    assert not any(k.startswith("AuxLogits") for k in shapes)


class _Recorder(torch.nn.Module):
    def forward(self, x):
        self.seen = x
        return x


def test_inception_pooling_quirks_of_the_fid_graph():
    # The FID graph's pool branches: 3x3 average pools that leave the padding out of the count
    # (count_include_pad=False), and a max pool in Mixed_7c alone.
    ones = torch.ones(1, 2, 5, 5)
    assert torch.equal(inc._avg_pool(ones), ones)  # borders average real pixels only
    x = torch.randn(2, 16, 6, 6, generator=torch.Generator().manual_seed(0))
    avg = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    mx = torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1)
    for block, want in (
        (inc.BlockA(16, pool_features=8), avg),
        (inc.BlockC(16, c7=8), avg),
        (inc.BlockE(16, pool="avg"), avg),
        (inc.BlockE(16, pool="max"), mx),
    ):
        block.branch_pool = _Recorder()
        block.eval()(x)
        torch.testing.assert_close(block.branch_pool.seen, want)
    net = inc.FIDInceptionV3()
    assert (net.Mixed_7b.pool, net.Mixed_7c.pool) == ("avg", "max")


def _fake_weights(path, seed=0):
    """A state dict with the weights file's keys and shapes and random values, saved like the
    original (no batch-norm counters)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in inc.FIDInceptionV3().state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(v.shape, generator=g) * 0.05
    torch.save(state, path)
    return state


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fid") / inc.FID_WEIGHTS_FILE
    state = _fake_weights(path)
    return path, state, sha256_file(path)


def test_inception_loads_a_state_dict_with_the_weights_keys(weights_file):
    path, state, digest = weights_file
    ext = inc.InceptionExtractor(inc.InceptionOptions(weights=str(path), sha256=digest))
    loaded = ext.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    x = torch.rand(2, 3, 40, 40) * 2 - 1
    feats, logits = ext.features(x), ext.logits(x)
    assert feats.shape == (2, 2048) and logits.shape == (2, 1008)
    # pytorch-fid's pipeline: [-1, 1] -> [0, 1], 256 levels, bilinear to 299, back to [-1, 1].
    x01 = torch.round((x + 1) / 2 * 255) / 255
    want = 2 * torch.nn.functional.interpolate(x01, size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(ext.prepare(x), want)
    torch.testing.assert_close(feats, ext.net(want))
    # IS logits: pool3 times the classifier weights, without the bias (OpenAI's code).
    torch.testing.assert_close(logits, feats @ state["fc.weight"].T)
    # Grey images are repeated to RGB.
    torch.testing.assert_close(ext.prepare(x[:, :1]), ext.prepare(x[:, :1].expand(-1, 3, -1, -1)))


def test_metrics_through_the_inception_extractor(weights_file, registry, monkeypatch):
    path, _, digest = weights_file
    monkeypatch.setenv(inc.ENV_WEIGHTS, str(path))  # what `genfw eval --fid-weights PATH` sets
    real, fake = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16) * 2 - 1
    opts = {"num_samples": 2, "progress": False, "extractor_options": {"sha256": digest}}
    # KID on one subset of both samples (cheap; FID's 2048-d eigensolvers are slow on a busy CPU).
    kid = registry.spec("metric", "kid", {**opts, "subsets": 1, "subset_size": 2}, where="m").build()
    value = kid(_ctx(real, fake))["mean"]
    ext = inc.InceptionExtractor(inc.InceptionOptions(weights=str(path), sha256=digest))
    f = ext.features(torch.cat([real, fake.expand(-1, 3, -1, -1)]))
    assert value == pytest.approx(q.polynomial_mmd2(f[:2], f[2:]), rel=1e-5)


def test_inception_weights_lookup_env_and_hub_cache(weights_file, tmp_path, monkeypatch):
    path, _, _ = weights_file
    with pytest.raises(genfw.GenfwError) as err:
        inc.find_weights()
    msg = str(err.value)
    assert inc.FID_WEIGHTS_FILE in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    assert "never downloads" in msg and "\n" not in msg
    monkeypatch.setenv(inc.ENV_WEIGHTS, str(path))
    assert inc.find_weights() == path
    monkeypatch.delenv(inc.ENV_WEIGHTS)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / inc.FID_WEIGHTS_FILE).symlink_to(path)
    assert inc.find_weights() == hub / inc.FID_WEIGHTS_FILE
    with pytest.raises(genfw.GenfwError, match="does not exist"):
        inc.find_weights(str(tmp_path / "nowhere.pth"))
    # A folder holding torch-fidelity's copy of the file.
    folder = tmp_path / "fidelity"
    folder.mkdir()
    (folder / inc.FID_WEIGHTS_ALIASES[1]).symlink_to(path)
    assert inc.find_weights(str(folder)) == folder / inc.FID_WEIGHTS_ALIASES[1]


def test_inception_refuses_a_file_with_another_hash(weights_file):
    path, _, _ = weights_file
    with pytest.raises(genfw.GenfwError, match=r"sha256 .* expected 6726825d0af5") as err:
        inc.InceptionExtractor(inc.InceptionOptions(weights=str(path)))
    assert "download it again" in str(err.value)


def test_inception_refuses_other_networks_and_bad_images(weights_file, tmp_path):
    path, state, digest = weights_file
    bad = tmp_path / "bad.pth"
    torch.save({k: v for k, v in state.items() if k != "fc.bias"}, bad)
    with pytest.raises(genfw.GenfwError, match=r"lacks fc\.bias"):
        inc.load_network(bad, sha256_file(bad))
    ext = inc.InceptionExtractor(inc.InceptionOptions(weights=str(path), sha256=digest))
    with pytest.raises(genfw.GenfwError, match=r"1 or 3 channels\), got 4 channels"):
        ext.features(torch.zeros(2, 4, 8, 8))
    with pytest.raises(genfw.GenfwError, match=r"takes images \(N, C, H, W\)"):
        ext.features(torch.zeros(2, 64))
    with pytest.raises(genfw.GenfwError, match="NaN"):
        ext.features(torch.full((1, 3, 8, 8), float("nan")))


# --- classifier, metrics on runs and on files ----------------------------------------------------------


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory):
    from genfw import cli

    out = tmp_path_factory.mktemp("evaluator") / "digits.safetensors"
    code = cli.main(
        ["train-evaluator", "--dataset", "digits", "--steps", "150", "--out", str(out), "--no-progress"]
    )
    assert code == 0
    return out


def test_train_evaluator_writes_weights_and_metadata(evaluator, run_cli):
    meta = json.loads(evaluator.with_suffix(".json").read_text())
    assert meta["dataset"] == "digits" and meta["shape"] == [1, 8, 8] and meta["num_classes"] == 10
    assert meta["sha256"] == sha256_file(evaluator)
    assert meta["accuracy"] > 0.8  # held-out digits
    code, _, err = run_cli("train-evaluator", "--dataset", "digits", "--out", evaluator, "--steps", "1")
    assert code == 2 and "already exists" in err
    code, _, err = run_cli(
        "train-evaluator", "--dataset", "toy2d", "--steps", "1", "--out", evaluator.parent / "t.safetensors"
    )
    assert code == 2 and "image classifier" in err


def test_classifier_features_and_errors(evaluator, registry, tmp_path):
    ext = registry.spec("extractor", "classifier", {"weights": str(evaluator)}, where="x").build()
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    assert ext.features(x).shape == (5, 128) and ext.logits(x).shape == (5, 10)
    with pytest.raises(genfw.GenfwError, match=r"trained on 'digits' images of shape \(1, 8, 8\)"):
        ext.features(torch.zeros(2, 3, 8, 8))
    # Changed weights no longer match the recorded hash.
    copy = tmp_path / "e.safetensors"
    tensors = safetensors.torch.load_file(str(evaluator))
    tensors = {k: v + 1 for k, v in tensors.items()}
    safetensors.torch.save_file(tensors, str(copy))
    copy.with_suffix(".json").write_text(evaluator.with_suffix(".json").read_text())
    with pytest.raises(genfw.GenfwError, match="re-run genfw train-evaluator"):
        registry.spec("extractor", "classifier", {"weights": str(copy)}, where="x").build()
    with pytest.raises(genfw.GenfwError, match="genfw train-evaluator --dataset NAME"):
        registry.spec("extractor", "classifier", {}, where="x").build()


def _ctx(real, fake):
    return genfw.EvalContext(
        sample=lambda n: fake[:n], real=lambda n: real[:n], dataset=scoring.TensorImages(real)
    )


def test_metrics_use_the_extractor_and_cache_the_reference(evaluator, registry, tmp_path, monkeypatch):
    from genfw_plugins.datasets.digits import load_digits

    pixels, _ = load_digits()
    x = torch.from_numpy(pixels.astype(np.float32) / 8 - 1).reshape(-1, 1, 8, 8)
    real, fake = x[:900], x[900:1800]
    opts = {"extractor": "classifier", "weights": str(evaluator), "num_samples": 900, "progress": False}
    fid = registry.spec("metric", "fid", opts, where="m").build()
    value = fid(_ctx(real, fake))["fid"]
    ext = registry.spec("extractor", "classifier", {"weights": str(evaluator)}, where="x").build()
    assert value == pytest.approx(q.fid_from_features(ext.features(real), ext.features(fake)), rel=1e-5)
    cached = list((tmp_path / "cache" / "reference").glob("*.safetensors"))
    assert len(cached) == 1
    # The reference is read from the cache, not recomputed; the value is reproducible.
    calls = []
    monkeypatch.setattr(
        q, "feature_statistics", lambda f, _orig=q.feature_statistics: calls.append(1) or _orig(f)
    )
    assert fid(_ctx(real, fake.clone()))["fid"] == value
    assert len(calls) == 1  # the generated set only
    # The other metrics run on the same features; IS uses the classifier's logits.
    for name, keys in [
        ("kid", {"mean", "std"}),
        ("is", {"mean", "std"}),
        ("precision_recall", {"precision", "recall"}),
        ("density_coverage", {"density", "coverage"}),
    ]:
        extra = {"subset_size": 100, "subsets": 5} if name == "kid" else {}
        out = registry.spec("metric", name, {**opts, **extra}, where="m").build()(_ctx(real, fake))
        assert set(out) == keys and all(np.isfinite(list(out.values())))
    is_mean = registry.spec("metric", "is", opts, where="m").build()(_ctx(real, fake))["mean"]
    assert 5 < is_mean <= 10  # ten balanced, well-classified digit classes
    with pytest.raises(genfw.GenfwError, match="has no logits"):
        registry.spec("metric", "is", {"extractor": "raw"}, where="m").build()(_ctx(real, fake))
    with pytest.raises(genfw.GenfwError, match=r"lower --metric\.kid\.subset_size"):
        registry.spec("metric", "kid", opts, where="m").build()(_ctx(real, fake))


def registry_metric(name, options):
    from genfw.plugins import get_registry

    return get_registry().spec("metric", name, {"extractor": "raw", **options}, where="m").build()


def test_eval_real_and_fake_files(run_cli, tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(30, 6, 6), dtype=np.uint8)
    b = rng.integers(0, 200, size=(30, 6, 6), dtype=np.uint8)
    folder = tmp_path / "real"
    (folder / "sub").mkdir(parents=True)
    for i, img in enumerate(a):
        Image.fromarray(img).save(folder / ("sub" if i % 2 else "") / f"{i:03d}.png")
    np.save(tmp_path / "fake.npy", b[:, None])
    code, out, err = run_cli(
        "eval", "--real", folder, "--fake", tmp_path / "fake.npy", "--metric", "fid",
        "--metric.fid.extractor", "raw", "--metric", "precision_recall",
        "--metric.precision_recall.extractor", "raw", "--out", tmp_path / "r.json",
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(out)
    assert res == json.loads((tmp_path / "r.json").read_text())
    # Files are read in sorted order of their path; uint8 0..255 maps to [-1, 1].
    order = sorted(range(30), key=lambda i: ("sub/" if i % 2 else "") + f"{i:03d}.png")
    real = torch.from_numpy(a[order].reshape(30, -1).astype(np.float64)) / 127.5 - 1
    fake = torch.from_numpy(b.reshape(30, -1).astype(np.float64)) / 127.5 - 1
    assert res["fid/fid"] == pytest.approx(q.fid_from_features(real, fake), rel=1e-5)
    assert res["precision_recall/precision"] == pytest.approx(q.precision_recall(real, fake)[0])
    # Only the samples the metrics use are read: the first num_samples (files in sorted order).
    from genfw import scoring

    torch.testing.assert_close(scoring.read_samples(folder, 7).double().flatten(1), real[:7].float().double())
    torch.testing.assert_close(scoring.read_samples(tmp_path / "fake.npy", 5).double().flatten(1), fake[:5])
    fid_of = {"fid": registry_metric("fid", {"num_samples": 12})}
    assert scoring.samples_needed(fid_of) == 12

    safetensors.torch.save_file({"samples": torch.zeros(4, 4, 6, 6)}, str(tmp_path / "bad.safetensors"))
    code, _, err = run_cli("eval", "--real", folder, "--fake", tmp_path / "bad.safetensors")
    assert code == 2 and "1 (grey) or 3 (RGB) channels" in err
    Image.fromarray(a[0][:5]).save(folder / "odd.png")
    code, _, err = run_cli("eval", "--real", folder, "--fake", tmp_path / "fake.npy")
    assert code == 2 and "different sizes" in err
    code, _, err = run_cli("eval", "--real", folder)
    assert code == 2 and "both --real and --fake" in err


def test_metrics_run_during_training_and_from_genfw_eval(run_cli, tmp_path):
    run = tmp_path / "run"
    common = ["--metric", "fid", "--metric.fid.extractor", "raw", "--metric.fid.num_samples", "300",
              "--metric.fid.progress", "false"]  # fmt: skip
    code, _, err = run_cli(
        "train",
        "--dataset",
        "toy2d",
        "--out",
        run,
        "--steps",
        "6",
        "--train.eval_every",
        "3",
        *QUICK,
        *common,
    )
    assert code == 0, err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    fids = {r["step"]: r["fid/fid"] for r in rows if "fid/fid" in r}
    assert set(fids) == {3, 6} and all(v > 0 for v in fids.values())
    code, out, err = run_cli("eval", run, *common)
    assert code == 0, err
    assert json.loads(out)["fid/fid"] == pytest.approx(fids[6])
