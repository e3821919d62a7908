"""vqvae: quantisation, straight-through gradients, the loss terms, the EMA codebook, dead-code
restarts, the PixelCNN prior's causality, the contract, training on digits and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from genfw import Batch, GenfwError, Modules
from genfw.config import resolve
from genfw.testing import check_variant
from genfw.train import Trainer, build, read_run
from genfw_plugins.vqvae import Codebook, PixelCNN, perplexity

from .conftest import QUICK

# Small networks: every test here trains in seconds on one core.
SMALL = {"channels": 16, "residual_blocks": 1, "codebook_size": 8, "code_dim": 4, "prior_channels": 8}
TINY = tuple(a for k, v in SMALL.items() for a in (f"--plugin.{k}", str(v)))


def codebook(rows, **kw) -> Codebook:
    """A codebook holding ``rows`` (K, D)."""
    e = torch.tensor(rows, dtype=torch.float32)
    options = {"ema": False, "decay": 0.99, "epsilon": 1e-5, "restart": 0, **kw}
    cb = Codebook(e.shape[0], e.shape[1], **options)
    cb.embedding.data.copy_(e)
    return cb


def grid(vectors) -> torch.Tensor:
    """Vectors (N, D) as a grid (1, D, 1, N)."""
    return torch.tensor(vectors, dtype=torch.float32).t().reshape(1, len(vectors[0]), 1, len(vectors))


def built(registry, **options):
    raw = {"variant": {"name": "vqvae", **SMALL, **options}, "dataset": "digits", "metrics": {}}
    torch.manual_seed(0)
    return build(resolve(raw, registry))


# --- quantisation -------------------------------------------------------------------------------------


def test_quantisation_picks_the_nearest_code_and_the_first_on_a_tie():
    cb = codebook([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]).eval()
    # squared distances to the three codes: (0.17, 0.37, 3.77), (0.36, 0.16, 4.36),
    # (1.48, 2.28, 0.68), and a tie (0.8125, 0.8125, 1.8125) between codes 0 and 1
    z_e = grid([[0.4, 0.1], [0.6, 0.0], [0.2, 1.2], [0.5, 0.75]])
    z_q, indices, codebook_term, commitment, counts = cb(z_e)
    assert indices.tolist() == [[[0, 1, 2, 0]]]
    assert torch.equal(z_q, grid([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]))
    assert counts.tolist() == [2.0, 1.0, 1.0]
    # Both terms are the summed squared distances to the chosen codes: 0.17 + 0.16 + 0.68 + 0.8125.
    assert commitment.item() == pytest.approx(1.8225) and codebook_term.item() == pytest.approx(1.8225)


def test_initial_codes_are_sonnets_variance_scaling_uniform():
    torch.manual_seed(0)
    for ema in (False, True):
        e = Codebook(512, 64, ema=ema, decay=0.99, epsilon=1e-5, restart=0).embedding.detach()
        bound = math.sqrt(3 / 64)  # fan_in = D of Sonnet's (D, K) embeddings: U(-sqrt(3/D), sqrt(3/D))
        assert e.abs().max() <= bound and e.abs().max() > 0.99 * bound
        assert e.var().item() == pytest.approx(1 / 64, rel=0.05)  # a^2 / 3 = 1 / D


def test_straight_through_passes_the_gradient_at_z_q_to_z_e():
    cb = codebook([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    z_e = grid([[0.4, 0.1], [0.2, 1.2]]).requires_grad_()
    z_q, *_ = cb(z_e)
    w = torch.tensor([3.0, -1.0, 0.5, 2.0]).view(1, 2, 1, 2)
    (w * z_q + z_q.square()).sum().backward()
    # d/dz_q of w z_q + z_q^2 is w + 2 z_q, at z_q = the codes (0, 0) and (0, 2), not at z_e
    expected = w + 2 * grid([[0.0, 0.0], [0.0, 2.0]])
    assert torch.equal(z_e.grad, expected)
    assert cb.embedding.grad is None  # z_q's value comes from the codes, its gradient goes to z_e only


def test_perplexity_of_known_usage_histograms():
    assert perplexity(torch.tensor([2.0, 2.0, 0.0, 0.0])).item() == pytest.approx(2.0)
    assert perplexity(torch.tensor([5.0, 5.0, 5.0, 5.0])).item() == pytest.approx(4.0)
    assert perplexity(torch.tensor([7.0, 0.0, 0.0])).item() == pytest.approx(1.0)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert perplexity(torch.tensor([3.0, 1.0])).item() == pytest.approx(math.exp(h))  # 1.7548


def test_the_loss_terms_and_the_codebook_gradient_against_a_hand_computation(registry):
    b = built(registry)
    m = Modules(b.model.modules)
    x = b.dataset.tensors[0][:5]
    out = b.model.phases[0].step(Batch(x, torch.zeros(5, dtype=torch.long)), m)
    # By hand: the encoder's grid, each vector's nearest code by brute force, the paper's terms.
    z_e = m.encoder(x).detach()  # (5, D, h, w)
    e = m.codebook.embedding.detach()  # (K, D)
    vectors = z_e.permute(0, 2, 3, 1).reshape(5, -1, 4)  # (B, h w, D)
    dist = ((vectors.unsqueeze(2) - e) ** 2).sum(-1)  # (B, h w, K)
    k = dist.argmin(-1)
    assert torch.equal(out.context["indices"].flatten(1), k)
    sq = dist.min(-1).values.sum(1)  # ||z_e - e_k||^2 per example, summed over the grid
    x_hat = m.generator(e[k].view(5, 4, 4, 4).permute(0, 3, 1, 2))
    rec = ((x_hat - x) ** 2).flatten(1).sum(1)
    assert torch.allclose(out.logs["reconstruction"], rec.detach(), rtol=1e-5)
    assert torch.allclose(out.logs["commitment"], sq, rtol=1e-5)
    assert torch.allclose(out.logs["codebook"], sq, rtol=1e-5)
    assert out.loss.item() == pytest.approx((rec + sq + 0.25 * sq).mean().item(), rel=1e-5)
    # Only ||sg[z_e] - e||^2 reaches the codes: d/de_j = mean over the batch of
    # sum over the vectors assigned to j of 2 (e_j - z_e).
    out.loss.backward()
    hand = torch.zeros_like(e)
    for i in range(5):
        for p in range(16):
            hand[k[i, p]] += 2 * (e[k[i, p]] - vectors[i, p]) / 5
    assert torch.allclose(m.codebook.embedding.grad, hand, atol=1e-5)


def test_ema_codebook_update_against_a_hand_stepped_update():
    decay, eps = 0.5, 0.1
    cb = codebook([[0.0, 0.0], [4.0, 0.0], [9.0, 9.0]], ema=True, decay=decay, epsilon=eps)
    steps = [
        [[1.0, 0.0], [0.0, 1.0], [3.0, 0.0]],  # codes 0, 0, 1; code 2 unused
        [[5.0, 1.0], [1.0, 1.0], [0.0, 0.0]],
    ]
    # By hand, as Sonnet's VectorQuantizerEMA: hidden averages from 0, debiased by 1 - decay^t,
    # Laplace-smoothed counts, e_k = m_k / N_k.
    hidden_n, hidden_m = [0.0] * 3, [[0.0, 0.0] for _ in range(3)]
    codes = [[0.0, 0.0], [4.0, 0.0], [9.0, 9.0]]
    for t, vectors in enumerate(steps, start=1):
        assign = [
            min(range(3), key=lambda j: sum((v[d] - codes[j][d]) ** 2 for d in range(2))) for v in vectors
        ]
        counts = [assign.count(j) for j in range(3)]
        sums = [
            [sum(v[d] for v, a in zip(vectors, assign, strict=True) if a == j) for d in range(2)]
            for j in range(3)
        ]
        hidden_n = [decay * h + (1 - decay) * c for h, c in zip(hidden_n, counts, strict=True)]
        hidden_m = [
            [decay * h[d] + (1 - decay) * s[d] for d in range(2)] for h, s in zip(hidden_m, sums, strict=True)
        ]
        debias = 1 - decay**t
        n_k = [h / debias for h in hidden_n]
        n = sum(n_k)
        smoothed = [(v + eps) / (n + 3 * eps) * n for v in n_k]
        codes = [[hidden_m[j][d] / debias / smoothed[j] for d in range(2)] for j in range(3)]
        cb.train()
        cb(grid(vectors))
        assert torch.allclose(cb.embedding, torch.tensor(codes), rtol=1e-6, atol=1e-7), f"step {t}"
    # step 1 moved code 0 to about the mean of (1, 0) and (0, 1), and code 2 (unused) to 0
    assert cb.ema_steps.item() == 2 and cb.embedding[2].abs().max() < 1e-6
    # no update outside training
    before = cb.embedding.clone()
    cb.eval()
    cb(grid([[9.0, 9.0]]))
    assert torch.equal(cb.embedding, before) and cb.ema_steps.item() == 2


@pytest.mark.parametrize("ema", [False, True])
def test_dead_codes_restart_from_the_batchs_encoder_outputs_after_n_idle_steps(ema):
    cb = codebook([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]], ema=ema, restart=2)
    cb.train()
    torch.manual_seed(0)
    near_zero = grid([[0.1, 0.0], [0.0, 0.1]])
    cb(near_zero)
    assert cb.idle.tolist() == [0, 1, 1]
    cb(near_zero)  # codes 1 and 2 unused for 2 consecutive steps
    assert cb.idle.tolist() == [0, 2, 2]
    batch = torch.tensor([[0.2, 0.3], [0.7, -0.1], [0.4, 0.4]])
    code0 = cb.embedding[0].clone()
    cb._restart_dead(batch)  # what the next training forward does first, with its batch's vectors
    assert torch.equal(cb.embedding[0], code0) and cb.idle.tolist() == [0, 0, 0]
    for j in (1, 2):
        assert any(torch.equal(cb.embedding[j], v) for v in batch), cb.embedding
    if ema:  # the moving averages give back the new codes: a count of 1 and a sum equal to the code
        debias = 1 - 0.99**2
        assert torch.allclose(cb.ema_count[1:] / debias, torch.ones(2))
        assert torch.allclose(cb.ema_sum[1:] / debias, cb.embedding[1:])
    # Through the training forward: codes idle for 2 steps are replaced before quantising.
    cb(near_zero)
    cb(near_zero)
    cb(grid(batch.tolist()))
    assert cb.idle.max().item() <= 1  # every restarted code was reset, then counted at most once
    if not ema:
        for j in (1, 2):
            assert any(torch.equal(cb.embedding[j], v) for v in batch), cb.embedding


# --- the PixelCNN prior -------------------------------------------------------------------------------


def test_the_pixelcnn_is_causal_in_raster_order():
    torch.manual_seed(0)
    net = PixelCNN(codes=5, channels=8, blocks=2).eval()
    idx = torch.randint(5, (3, 4, 4))
    base = net(idx)  # (3, 5, 4, 4)
    later_changed = 0
    for p in range(16):
        i, j = divmod(p, 4)
        other = idx.clone()
        other[:, i, j] = (other[:, i, j] + 1) % 5
        logits = net(other).flatten(2)  # (3, 5, 16)
        # the logits at p and before never depend on the index at p (mask A: not even at p)
        assert torch.equal(logits[:, :, : p + 1], base.flatten(2)[:, :, : p + 1]), f"position {p}"
        later_changed += int(
            p < 15 and not torch.equal(logits[:, :, p + 1 :], base.flatten(2)[:, :, p + 1 :])
        )
    assert later_changed == 15  # and every later position sees it (a 7x7 mask A covers a 4x4 grid)


def test_sampling_is_seeded_and_reproducible(registry):
    b = built(registry)
    m = Modules(b.model.modules)

    def draw(seed):
        torch.manual_seed(seed)
        return b.model.sample(m, 6, None)

    first, again, other = draw(3), draw(3), draw(4)
    assert first.shape == (6, 1, 8, 8) and torch.equal(first, again) and not torch.equal(first, other)


def test_log_weights_are_reconstruction_plus_prior_log_probability(registry):
    b = built(registry)
    assert b.model.log_weights is None  # mse is not a likelihood: no ELBO
    raw = {"variant": {"name": "vqvae", **SMALL}, "dataset": "digits", "metrics": {}, "loss": "gaussian"}
    b = build(resolve(raw, registry))
    m = Modules(b.model.modules)
    x = b.dataset.tensors[0][:3]
    w = b.model.log_weights(m, x, 4)
    idx = b.model.sample.__self__.indices(m, x)
    logits = m.pixelcnn(idx).log_softmax(1)
    log_pz = logits.gather(1, idx.unsqueeze(1)).flatten(1).sum(1)
    x_hat = m.generator(m.codebook.lookup(idx))
    log_px = -b.model.sample.__self__.loss(x_hat, x)
    assert w.shape == (4, 3) and torch.allclose(w, (log_px + log_pz).expand(4, 3), rtol=1e-5)


# --- contract, training, resume -----------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{}, {"codebook": "ema", "dead_code_restart": 1}])
def test_contract(extra):
    check_variant("vqvae", options={**SMALL, **extra})


def test_points_and_odd_sides_are_refused_in_one_line(registry):
    with pytest.raises(
        GenfwError, match=r"takes images \(C, H, W\); this data set's samples have shape \(2,\)"
    ):
        build(resolve({"variant": "vqvae", "dataset": "toy2d"}, registry))
    with pytest.raises(GenfwError, match="8x8 is not divisible by 16"):
        build(resolve({"variant": {"name": "vqvae", "downsample": 4}, "dataset": "digits"}, registry))


def test_short_training_on_digits_learns_codes_and_their_prior(tmp_path, registry):
    raw = {
        "variant": {"name": "vqvae", **SMALL, "codebook_size": 16},
        "dataset": "digits",
        "metrics": {"autoencoding": {"num_examples": 200}},
        "train": {"steps": 300, "batch_size": 32, "log_every": 50, "grid": 4, "sample_every": 0,
                  "eval_every": 0, "progress": False},
    }  # fmt: skip
    t = Trainer(resolve(raw, registry), tmp_path / "run")
    result = t.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "autoencoder/reconstruction" in r]
    first, last = logged[0], logged[-1]
    # 64 pixels in [-1, 1]: the per-image squared error falls far below its start
    assert last["autoencoder/reconstruction"] < 0.5 * first["autoencoder/reconstruction"]
    assert last["autoencoder/perplexity"] > 4  # several codes in use
    # the prior beats the uniform distribution over 16 codes at 16 positions (16 log 16 = 44.4 nats)
    assert last["prior/nll"] < 16 * math.log(16) - 3  # 37.3 measured
    assert result.metrics["autoencoding/reconstruction"] < 0.5 * first["autoencoder/reconstruction"]
    assert "autoencoding/latent_mmd" not in result.metrics and "autoencoding/elbo" not in result.metrics


def test_resume_is_bit_exact_with_the_ema_codebook_and_restarts(tmp_path, registry):
    def raw(steps, every):
        return {
            "variant": {"name": "vqvae", **SMALL, "codebook": "ema", "dead_code_restart": 1},
            "dataset": "digits",
            "metrics": {},
            "train": {"steps": steps, "batch_size": 8, "checkpoint_every": every, "sample_every": 0,
                      "progress": False},
        }  # fmt: skip

    straight = Trainer(resolve(raw(6, 3), registry), tmp_path / "straight")
    straight.fit()
    Trainer(resolve(raw(3, 3), registry), tmp_path / "split").fit()
    resumed = Trainer(
        read_run(tmp_path / "split", registry, [("train.steps", 6)]), tmp_path / "split", resume=True
    )
    assert resumed.step == 3
    resumed.fit()
    assert straight.plain["codebook"].ema_steps.item() == 6
    for name, mod in straight.plain.items():
        for (k, a), (_, b) in zip(
            mod.state_dict().items(), resumed.plain[name].state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), f"{name}.{k} differs after resume"


# --- the CLI ------------------------------------------------------------------------------------------


def test_cli_trains_samples_and_draws_the_autoencoder_pictures(tmp_path, run_cli):
    run = tmp_path / "run"
    code, out, err = run_cli(
        "train", "--plugin", "vqvae", "--steps", "4", "--out", run, *TINY, *QUICK,
        "--loss", "gaussian", "--metric.autoencoding.importance_samples", "2",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["autoencoding/held_out"] == 1.0 and math.isfinite(summary["autoencoding/reconstruction"])
    # a point-mass posterior: the ELBO with the PixelCNN prior, and the IWAE bound equal to it
    assert summary["autoencoding/elbo"] == pytest.approx(summary["autoencoding/log_likelihood"], abs=1e-4)
    assert "autoencoding/latent_mmd" not in summary
    for key in ("autoencoder/perplexity", "autoencoder/usage", "autoencoder/commitment", "prior/nll"):
        assert math.isfinite(summary[key]), key
    code, out, err = run_cli("sample", run, "-n", "4", "--seed", "1", "--out", tmp_path / "s.safetensors")
    assert code == 0, err
    code, out, err = run_cli("sample", run, "-n", "4", "--seed", "1", "--out", tmp_path / "s.png")
    assert code == 0 and Image.open(tmp_path / "s.png").size[0] > 0
    code, out, err = run_cli("eval", run, "--reconstruct", "6", "--traverse", "0,1")
    assert code == 0, err
    assert out.strip().splitlines()[-2:] == [str(run / f) for f in ("reconstructions.png", "traversals.png")]
    assert Image.open(run / "traversals.png").size[1] == 2 + 2 * 34  # one row per swept coordinate
    code, _, err = run_cli("eval", run, "--latent-plot")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "variant 'vqvae' has none (its codes are codebook indices" in err
    assert not (run / "latent.png").exists()


def test_cli_refuses_points_in_one_line(tmp_path, run_cli):
    code, _, err = run_cli(
        "train", "--plugin", "vqvae", "--dataset", "toy2d", "--out", tmp_path / "r", *QUICK
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "takes images (C, H, W)" in err
    assert not (tmp_path / "r").exists()


def test_list_shows_vqvae_with_its_options(run_cli):
    code, out, _ = run_cli("list", "variant")
    assert code == 0 and "vqvae" in out
    for flag in (
        "--plugin.codebook_size int = 64",
        "--plugin.beta float = 0.25",
        "--plugin.codebook str = 'loss'",
    ):
        assert flag in out, flag
