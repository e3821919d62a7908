"""InfoGAN: the mutual-information term against hand-computed values, both players adding it,
the Q head on the critic, the codes in the generator's input and ``--label`` setting the code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genfw import Batch, GenfwError, Modules
from genfw.config import resolve
from genfw.train import Trainer, build, generate
from genfw_plugins.infogan import Codes, InfoGAN, InfoGANOptions

SMALL = {"name": "mlp", "hidden": [16]}
LOG_2PI = math.log(2 * math.pi)


def config(steps: int = 3, **options):
    return {
        "variant": {"name": "infogan", **options},
        "dataset": "digits",
        "generator": SMALL,
        "critic": SMALL,
        "train": {"steps": steps, "batch_size": 16, "log_every": 1, "progress": False, "grid": 20},
    }


def linears(module: nn.Module) -> list[nn.Linear]:
    return [layer for layer in module.modules() if isinstance(layer, nn.Linear)]


def test_information_term_by_hand():
    info = InfoGAN(InfoGANOptions(categorical=[3], continuous=2, continuous_weight=0.5))
    # Q outputs for two samples: 3 logits, then the means of the two continuous codes.
    q = torch.tensor([[0.0, 1.0, 0.0, 0.5, -1.0], [2.0, 0.0, 0.0, 0.0, 0.0]])
    codes = Codes(torch.tensor([[1], [2]]), torch.tensor([[1.0, -1.0], [0.5, 0.0]]))
    loss, logs = info.information(q, codes)
    e = math.e
    ce = (-math.log(e / (2 + e)) - math.log(1 / (e**2 + 2))) / 2
    # Gaussian NLL with sigma = 1, summed over the two codes: 0.5 (c - mu)^2 + 0.5 log 2 pi each.
    nll = ((0.5 * 0.25 + 0.0 + LOG_2PI) + (0.5 * 0.25 + 0.0 + LOG_2PI)) / 2
    assert loss.item() == pytest.approx(ce + 0.5 * nll, rel=1e-6)
    assert logs["mi_categorical_0"].item() == pytest.approx(math.log(3) - ce, rel=1e-6)
    assert logs["q_accuracy_0"].item() == 0.5  # sample 0 predicted 1 (right), sample 1 predicted 0
    assert logs["nll_continuous"].item() == pytest.approx(nll, rel=1e-6)


def test_information_term_with_learned_std_by_hand():
    info = InfoGAN(InfoGANOptions(categorical=[], continuous=1, learn_std=True))
    assert info.q_dim == 2  # a mean and a log-variance
    q = torch.tensor([[0.5, math.log(4.0)], [0.0, 0.0]])  # sigma = 2, then sigma = 1
    codes = Codes(torch.zeros(2, 0, dtype=torch.long), torch.tensor([[-0.5], [1.0]]))
    loss, logs = info.information(q, codes)
    # -log N(c; mu, sigma) = 0.5 ((c - mu) / sigma)^2 + log sigma + 0.5 log 2 pi
    nll = ((0.5 * (1.0 / 2) ** 2 + math.log(2) + 0.5 * LOG_2PI) + (0.5 + 0.5 * LOG_2PI)) / 2
    assert loss.item() == pytest.approx(nll, rel=1e-6)
    assert set(logs) == {"nll_continuous"}


def test_q_head_shares_the_critic_and_codes_enter_the_generator(registry):
    b = build(resolve(config(categorical=[10, 4], continuous=2, latent_dim=5), registry))
    gen, critic = b.model.modules["generator"], b.model.modules["critic"]
    assert set(b.model.modules) == {"generator", "critic"}  # Q is a head of the critic, not a network
    assert linears(critic)[-1].out_features == 1 + 10 + 4 + 2
    assert linears(gen)[0].in_features == 5 + 10 + 4 + 2
    assert b.model.num_classes == 10  # --label sets the first categorical code
    assert b.model.phases[0].optim.lr == 2e-4 and b.model.phases[1].optim.lr == 1e-3  # authors' code


def test_both_players_add_the_weighted_information_term(registry, monkeypatch):
    b = build(resolve(config(info_weight=0.7, continuous_weight=0.3), registry))
    variant: InfoGAN = b.model.phases[0].step.__self__
    m = Modules(b.model.modules)
    x, y = b.dataset.tensors
    batch = Batch(x[:8], y[:8])
    drawn: list[Codes] = []
    codes = variant.codes
    monkeypatch.setattr(variant, "codes", lambda *a, **k: drawn.append(codes(*a, **k)) or drawn[-1])
    for phase in b.model.phases:
        out = phase.step(batch, m)
        c = drawn[-1]
        fake = out.context["fake"]
        q = m.critic(fake)  # (B, 1 + 10 + 2)
        # By hand: CE of the code, Gaussian NLL (sigma 1) of the continuous codes.
        ce = F.cross_entropy(q[:, 1:11], c.categorical[:, 0])
        nll = (0.5 * (c.continuous - q[:, 11:13]) ** 2 + 0.5 * LOG_2PI).sum(1).mean()
        info = ce + 0.3 * nll
        if phase.name == "critic":
            r, f = m.critic(batch.x)[:, 0], q[:, 0]
            adversarial = F.softplus(-r).mean() + F.softplus(f).mean()
        else:
            adversarial = F.softplus(-q[:, 0]).mean()  # non-saturating generator
        assert out.loss.item() == pytest.approx((adversarial + 0.7 * info).item(), rel=1e-5)
        assert c.categorical.shape == (8, 1) and ((c.continuous >= -1) & (c.continuous <= 1)).all()


class SpyGenerator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.inputs: list[Tensor] = []

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        self.inputs.append(z)
        return torch.zeros(len(z), 1, 8, 8) + self.w


def test_label_sets_the_categorical_code(registry):
    b = build(resolve(config(latent_dim=6), registry))
    spy = SpyGenerator()
    m = Modules({"generator": spy, "critic": b.model.modules["critic"]})
    generate(b.model, m, 5, labels=7)
    onehot = spy.inputs[-1][:, 6:16]  # after the noise: the 10-way code
    assert onehot.argmax(1).tolist() == [7] * 5 and onehot.sum(1).tolist() == [1.0] * 5
    with pytest.raises(GenfwError, match=r"label 10 is outside this model's 10 classes"):
        generate(b.model, m, 5, labels=10)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"categorical": [], "continuous": 0}, "infogan needs at least one code"),
        ({"categorical": [1]}, "must be at least 2"),
        ({"info_weight": -1.0}, "info_weight must be >= 0"),
    ],
)
def test_bad_options(registry, options, message):
    with pytest.raises(GenfwError, match=message):
        resolve(config(**options), registry)


def test_infogan_trains_on_digits_and_saves_a_row_per_code_value(tmp_path, registry):
    result = Trainer(resolve(config(steps=8), registry), tmp_path / "run").fit()
    logs = result.last_logs
    assert result.step == 8 and all(math.isfinite(v) for v in logs.values())
    assert {"critic/mi_categorical_0", "generator/nll_continuous", "generator/q_accuracy_0"} <= set(logs)
    assert (tmp_path / "run" / "samples" / "step_0000008.png").is_file()
