"""cgan and acgan: labels flow from the data set to both players, the ACGAN objective against
hand-computed values, per-class sample grids, and ``genfw sample --label``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from genfw import Batch, GenfwError, Modules
from genfw.config import resolve
from genfw.plugins import get_registry
from genfw.train import Trainer, build, generate, sample_labels
from genfw_plugins.networks import MLPGenerator

from .conftest import QUICK

SMALL = {"name": "mlp", "hidden": [16]}


def config(variant: str, dataset: str = "digits", steps: int = 3, **extra):
    raw = {
        "variant": variant,
        "dataset": dataset,
        "generator": SMALL,
        "critic": SMALL,
        "train": {"steps": steps, "batch_size": 16, "log_every": 1, "progress": False, "grid": 20},
    }
    raw.update(extra)
    return raw


def linears(module: nn.Module) -> list[nn.Linear]:
    return [layer for layer in module.modules() if isinstance(layer, nn.Linear)]


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_cgan_conditions_both_players_on_the_batch_labels(registry):
    b = build(resolve(config("cgan"), registry))
    gen, critic = b.model.modules["generator"], b.model.modules["critic"]
    assert b.model.num_classes == 10
    assert linears(gen)[0].in_features == 64 + 10 and linears(critic)[0].in_features == 64 + 10  # one-hot y
    x, y = b.dataset.tensors
    batch = Batch(x[:8], y[:8])
    m = Modules(b.model.modules)
    torch.manual_seed(0)
    out = b.model.phases[0].step(batch, m)
    torch.manual_seed(0)  # the same noise, by hand: G(z, y), D(x, y)
    fake = gen(torch.randn(8, 64), batch.y)
    real_scores, fake_scores = critic(batch.x, batch.y).squeeze(1), critic(fake, batch.y).squeeze(1)
    expected = (F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()).item()
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert torch.equal(out.context["labels"], batch.y)
    # Regularisers score interpolates with the labels they are given.
    assert torch.allclose(out.context["critic"](batch.x, batch.y), real_scores)


def test_conditional_variants_need_labelled_data(registry):
    for variant in ("cgan", "acgan"):
        with pytest.raises(GenfwError, match=f"variant '{variant}' needs a labelled data set"):
            build(resolve(config(variant, dataset="toy2d"), registry))


class PixelCritic(nn.Module):
    """Reads its outputs off the first three pixels: (score, logit of class 0, logit of class 1)."""

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return x.flatten(1)[:, :3]


class LabelledImages(nn.Module):
    """A generator that ignores z and returns a fixed image per label."""

    def __init__(self, images: Tensor) -> None:
        super().__init__()
        self.images = images
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        assert y is not None
        return self.images[y] + 0 * self.w


def image(*pixels: float) -> Tensor:
    x = torch.zeros(1, 8, 8)
    x.view(-1)[: len(pixels)] = torch.tensor(pixels)
    return x


def test_acgan_objective_by_hand(registry):
    raw = config("acgan")
    raw["variant"] = {"name": "acgan", "class_weight": 0.5}
    b = build(resolve(raw, registry))
    assert linears(b.model.modules["critic"])[-1].out_features == 1 + 10  # score and class logits
    assert linears(b.model.modules["critic"])[0].in_features == 64  # the critic is not given y
    critic_phase, gen_phase = b.model.phases
    # Two classes' worth of tiny tensors: real rows (score, logit0, logit1) and one fake per label.
    batch = Batch(torch.stack([image(2, 1, -1), image(-1, 0, 3)]), torch.tensor([0, 1]))
    fakes = torch.stack([image(-2, 0.5, 0.5), image(1, 2, 0)])
    m = Modules({"generator": LabelledImages(fakes), "critic": PixelCritic()})
    out = critic_phase.step(batch, m)
    # Non-saturating critic: mean softplus(-r) + mean softplus(f), with r = (2, -1), f = (-2, 1).
    adversarial = (softplus(-2) + softplus(1)) / 2 + (softplus(-2) + softplus(1)) / 2
    # -log softmax at the label: real (1, -1) -> 0, (0, 3) -> 1; fake (.5, .5) -> 0, (2, 0) -> 1.
    ce_real = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-3))) / 2
    ce_fake = (math.log(2) + math.log1p(math.exp(2))) / 2
    assert out.loss.item() == pytest.approx(adversarial + 0.5 * (ce_real + ce_fake), rel=1e-6)
    assert out.logs["class_real"].item() == pytest.approx(ce_real, rel=1e-6)
    assert out.logs["accuracy_real"].item() == 1.0 and out.logs["accuracy_fake"].item() == 0.5
    assert torch.equal(out.context["real_scores"], torch.tensor([2.0, -1.0]))
    out = gen_phase.step(batch, m)
    # Generator: mean softplus(-f) + weight * CE of the fakes' classes.
    expected = (softplus(2) + softplus(-1)) / 2 + 0.5 * ce_fake
    assert out.loss.item() == pytest.approx(expected, rel=1e-6)


class Spy:
    """Records the labels every MLP generator is called with."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[Tensor | None] = []
        forward = MLPGenerator.forward

        def spy(module: MLPGenerator, z: Tensor, y: Tensor | None = None) -> Tensor:
            self.calls.append(None if y is None else y.detach().clone())
            return forward(module, z, y)

        monkeypatch.setattr(MLPGenerator, "forward", spy)


def test_generate_makes_labels_on_the_model_device_and_checks_them(registry, monkeypatch):
    b = build(resolve(config("cgan"), registry))
    m = Modules(b.model.modules)
    spy = Spy(monkeypatch)
    generate(b.model, m, 5, labels=3)
    assert spy.calls[-1].tolist() == [3] * 5 and spy.calls[-1].device == torch.device("cpu")
    generate(b.model, m, 12)  # by default, every class in turn
    assert spy.calls[-1].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    with pytest.raises(
        GenfwError, match=r"^label 10 is outside this model's 10 classes; valid labels: 0..9$"
    ):
        generate(b.model, m, 5, labels=10)
    with pytest.raises(GenfwError, match=r"label -1 is outside"):
        sample_labels(b.model, 2, torch.tensor([1, -1]), torch.device("cpu"))
    gan = build(resolve(config("gan"), registry))
    assert gan.model.num_classes == 0
    assert sample_labels(gan.model, 4, None, torch.device("cpu")) is None
    with pytest.raises(GenfwError, match="this model is unconditional"):
        generate(gan.model, Modules(gan.model.modules), 4, labels=0)


@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cgan") / "run"
    Trainer(resolve(config("cgan", steps=2), get_registry()), run).fit()
    return run


def test_training_saves_a_grid_with_one_labelled_row_per_class(cgan_run):
    grid = np.asarray(Image.open(cgan_run / "samples" / "step_0000002.png"))
    # grid 20 over 10 classes: 10 rows of 2 tiles; 8x8 digits are shown at 32 px with 2 px padding,
    # and a 28 px margin on the left holds the class labels.
    assert grid.shape == (10 * 34 + 2, 28 + 2 * 34 + 2, 3)
    margin = grid[:, :28]
    for row in range(10):  # each row's label is drawn in the margin, in black
        assert (margin[2 + row * 34 : 2 + (row + 1) * 34] < 100).any()
    assert list((cgan_run / "tb").glob("events.*"))  # the same picture goes to TensorBoard


def test_sample_label_passes_the_label_to_the_generator(cgan_run, run_cli, tmp_path, monkeypatch):
    spy = Spy(monkeypatch)
    code, _, err = run_cli("sample", cgan_run, "-n", "6", "--label", "3", "--out", tmp_path / "s.png")
    assert code == 0, err
    assert [c.tolist() for c in spy.calls] == [[3] * 6]  # one chunk, every sample of class 3
    assert (tmp_path / "s.png").is_file()
    code, _, err = run_cli("sample", cgan_run, "-n", "4", "--label", "7", "--out", tmp_path / "s.safetensors")
    assert code == 0, err
    saved = safetensors.torch.load_file(str(tmp_path / "s.safetensors"))
    assert saved["labels"].tolist() == [7] * 4 and saved["samples"].shape == (4, 1, 8, 8)
    # Without --label a conditional run draws one row per class.
    code, _, err = run_cli("sample", cgan_run, "-n", "20", "--out", tmp_path / "all.png")
    assert code == 0, err
    assert spy.calls[-1].tolist() == [c for c in range(10) for _ in range(2)]


def test_sample_label_errors(cgan_run, run_cli, tmp_path):
    code, _, err = run_cli("sample", cgan_run, "--label", "10", "--out", tmp_path / "x.png")
    assert code == 2
    assert err.strip() == "genfw: error: label 10 is outside this model's 10 classes; valid labels: 0..9"
    assert not (tmp_path / "x.png").exists()
    gan_run = tmp_path / "gan"
    code, _, err = run_cli("train", "--plugin", "gan", "--out", gan_run, "--steps", "1", *QUICK)
    assert code == 0, err
    code, _, err = run_cli("sample", gan_run, "--label", "3", "--out", tmp_path / "y.png")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "this model is unconditional" in err and not (tmp_path / "y.png").exists()


@pytest.mark.parametrize("variant", ["cgan", "acgan"])
def test_conditional_variants_train_on_digits(tmp_path, registry, variant):
    result = Trainer(resolve(config(variant, steps=8), registry), tmp_path / "run").fit()
    assert result.step == 8 and all(math.isfinite(v) for v in result.last_logs.values())
    logs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(logs) >= 8 and "generator/loss" in logs[-1]


def test_cgan_with_a_gradient_penalty_scores_interpolates_with_labels(tmp_path, registry):
    """``x_hat_i = eps_i x_i + (1 - eps_i) G(z_i, y_i)`` is scored as ``D(x_hat_i, y_i)``: the penalty
    equals one taken example by example, each with its own label; labels in another order give
    another value (the conditional critic's gradient depends on the label)."""
    raw = config("cgan", steps=2, regularisers={"gradient_penalty": {"weight": 1.0}})
    b = build(resolve(raw, registry))
    x, y = b.dataset.tensors
    batch = Batch(x[:8].float(), y[:8])
    assert y[:8].unique().numel() == 8
    out = b.model.phases[0].step(batch, Modules(b.model.modules))
    [(_, gp)] = b.regularisers["critic"]
    torch.manual_seed(1)
    penalty = gp.penalty(out.context)
    torch.manual_seed(1)
    eps = torch.rand(8, 1, 1, 1)  # the penalty's draw: one per example
    critic, fake = b.model.modules["critic"], out.context["fake"]
    norms = []
    for i in range(8):
        x_hat = (eps[i] * batch.x[i] + (1 - eps[i]) * fake[i]).unsqueeze(0).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x_hat, batch.y[i : i + 1]).sum(), x_hat)
        norms.append(grad.norm())
    torch.testing.assert_close(penalty, ((torch.stack(norms) - 1) ** 2).mean())
    torch.manual_seed(1)
    shuffled = gp.penalty({**out.context, "labels": batch.y.roll(1)})
    assert not torch.isclose(shuffled, penalty, rtol=1e-3)
    result = Trainer(resolve(raw, registry), tmp_path / "run").fit()
    assert math.isfinite(result.last_logs["critic/gradient_penalty"])
