"""Tests of the built-in networks (genfw_plugins.networks): shapes, conditioning, output ranges."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genfw import GenfwError
from genfw.plugins import PluginHost
from genfw_plugins import networks

IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
SMALL = {"mlp": {"hidden": [32]}, "dcgan": {"channels": 4}}  # keep the tests fast


@pytest.fixture(scope="module")
def registry():
    host = PluginHost()
    host.add(networks, "networks")
    return host.registry


def build(registry, kind: str, name: str, options: dict | None = None, **context):
    return registry.spec(kind, name, options or {}, where=kind).build(**context)


def test_registered_names(registry) -> None:
    for kind in ("generator", "critic", "encoder"):
        assert registry.names(kind) == ["dcgan", "mlp"]


# --- shapes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "dcgan"])
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_image_shapes(registry, name: str, shape: tuple[int, ...]) -> None:
    g = build(registry, "generator", name, SMALL[name], latent_dim=5, out_shape=shape, num_classes=0)
    d = build(registry, "critic", name, SMALL[name], in_shape=shape, out_dim=1, num_classes=0)
    e = build(registry, "encoder", name, SMALL[name], in_shape=shape, out_dim=6, num_classes=0)
    x = g(torch.randn(3, 5))
    assert x.shape == (3, *shape)
    assert d(x).shape == (3, 1)
    assert e(x).shape == (3, 6)


def test_mlp_points_shape(registry) -> None:
    g = build(registry, "generator", "mlp", {"output": "none"}, latent_dim=2, out_shape=(2,), num_classes=0)
    d = build(registry, "critic", "mlp", {}, in_shape=(2,), out_dim=1, num_classes=0)
    x = g(torch.randn(7, 2))
    assert x.shape == (7, 2)
    assert d(x).shape == (7, 1)


@pytest.mark.parametrize(
    ("shape", "geometry"),
    [
        ((1, 8, 8), (4, 1)),
        ((1, 14, 14), (7, 1)),
        ((1, 28, 28), (7, 2)),
        ((3, 32, 32), (4, 3)),
        ((3, 64, 64), (4, 4)),
    ],
)
def test_dcgan_geometry(shape: tuple[int, ...], geometry: tuple[int, int]) -> None:
    assert networks.dcgan_geometry(shape) == geometry


def test_dcgan_layer_counts(registry) -> None:
    # 32 = 4 * 2**3: three transposed convs up, three strided convs down.
    g = build(
        registry, "generator", "dcgan", {"channels": 8}, latent_dim=4, out_shape=(3, 32, 32), num_classes=0
    )
    d = build(registry, "critic", "dcgan", {"channels": 8}, in_shape=(3, 32, 32), out_dim=1, num_classes=0)
    ups = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    downs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in ups] == [(64, 32), (32, 16), (16, 8)]
    assert [(m.in_channels, m.out_channels) for m in downs] == [(3, 8), (8, 16), (16, 32)]
    # No batch norm right after the critic's first conv (DCGAN), but after the others.
    body = list(d.body)
    assert isinstance(body[1], nn.LeakyReLU) and body[1].negative_slope == 0.2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in body) == 2
    plain = build(
        registry,
        "critic",
        "dcgan",
        {"channels": 8, "batch_norm": False},
        in_shape=(3, 32, 32),
        out_dim=1,
        num_classes=0,
    )
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())


@pytest.mark.parametrize("shape", [(3, 30, 30), (3, 32, 16), (32, 32), (1, 4, 4), (2,)])
def test_dcgan_refuses_unsupported_shapes(registry, shape: tuple[int, ...]) -> None:
    # The factory refuses with ValueError; the registry turns that into a one-line user error.
    with pytest.raises(GenfwError, match=r"generator 'dcgan' cannot be built here: .*supported: \(C, S, S\)"):
        build(registry, "generator", "dcgan", {}, latent_dim=4, out_shape=shape, num_classes=0)
    with pytest.raises(GenfwError, match=r"critic 'dcgan' cannot be built here: .*cannot handle shape"):
        build(registry, "critic", "dcgan", {}, in_shape=shape, out_dim=1, num_classes=0)
    with pytest.raises(ValueError, match="cannot handle shape"):
        networks.dcgan_geometry(shape)


def test_wrong_input_shape_is_a_clear_error(registry) -> None:
    d = build(registry, "critic", "mlp", {}, in_shape=(1, 8, 8), out_dim=1, num_classes=0)
    with pytest.raises(ValueError, match=r"expects inputs of shape \(B, 1, 8, 8\), got \(2, 64\)"):
        d(torch.zeros(2, 64))


def test_dcgan_init(registry) -> None:
    torch.manual_seed(0)
    d = build(registry, "critic", "dcgan", {"channels": 16}, in_shape=(3, 32, 32), out_dim=1, num_classes=0)
    w = torch.cat([m.weight.flatten() for m in d.modules() if isinstance(m, nn.Conv2d)])
    assert abs(w.std().item() - 0.02) < 0.001
    assert abs(w.mean().item()) < 0.001


# --- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options_class", "raw", "message"),
    [
        (networks.MLPOptions, {"activation": "swish2"}, "activation must be one of leaky_relu, relu, elu"),
        (
            networks.MLPGeneratorOptions,
            {"output": "softmax"},
            "output must be one of auto, tanh, sigmoid, none",
        ),
        (networks.MLPOptions, {"hidden": [64, 0]}, "hidden must be positive, got 0"),
        (networks.DCGANOptions, {"channels": 0}, "channels must be positive"),
    ],
)
def test_invalid_options_are_refused(registry, options_class: type, raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        options_class(**raw)
    kind, name = (
        ("generator", "mlp") if "output" in raw else ("critic", "dcgan" if "channels" in raw else "mlp")
    )
    with pytest.raises(GenfwError):
        registry.spec(kind, name, raw, where=kind)


@pytest.mark.parametrize("name", ["mlp", "dcgan"])
def test_output_activation(registry, name: str) -> None:
    """tanh and sigmoid are applied to exactly what ``output: none`` gives with the same weights."""
    outs = {}
    for output in ("none", "tanh", "sigmoid"):
        torch.manual_seed(1)
        options = {**SMALL[name], "output": output, **({"dcgan_init": False} if name == "dcgan" else {})}
        g = build(registry, "generator", name, options, latent_dim=3, out_shape=(1, 8, 8), num_classes=0)
        g.eval()
        last = [m for m in g.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
        with torch.no_grad():
            last.weight.mul_(100.0)  # push the raw outputs well beyond [-1, 1]
        torch.manual_seed(2)
        outs[output] = g(torch.randn(16, 3))
    raw = outs["none"]
    assert raw.abs().max() > 1.0  # so the range test below is not trivial
    torch.testing.assert_close(outs["tanh"], torch.tanh(raw))
    torch.testing.assert_close(outs["sigmoid"], torch.sigmoid(raw))
    assert outs["tanh"].min() >= -1.0 and outs["tanh"].max() <= 1.0


def test_mlp_activation_and_batch_norm(registry) -> None:
    d = build(
        registry,
        "critic",
        "mlp",
        {"hidden": [8, 8, 8], "activation": "elu", "batch_norm": True},
        in_shape=(4,),
        out_dim=1,
        num_classes=0,
    )
    assert sum(isinstance(m, nn.ELU) for m in d.modules()) == 3
    assert sum(isinstance(m, nn.BatchNorm1d) for m in d.modules()) == 2  # not after the first layer
    g = build(
        registry,
        "generator",
        "mlp",
        {"hidden": [8, 8], "batch_norm": True},
        latent_dim=2,
        out_shape=(4,),
        num_classes=0,
    )
    assert sum(isinstance(m, nn.BatchNorm1d) for m in g.modules()) == 2
    assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in g.modules()) == 2


# --- conditioning -------------------------------------------------------------------------------


def test_one_hot_concatenation_is_exact(registry) -> None:
    """A linear MLP critic (no hidden layers) computes W [flatten(x), one_hot(y)] + b."""
    d = build(registry, "critic", "mlp", {"hidden": []}, in_shape=(2, 3), out_dim=1, num_classes=4)
    linear = d.head  # no hidden layers: the head is the only linear layer
    x = torch.randn(5, 2, 3)
    y = torch.tensor([0, 1, 2, 3, 1])
    expected = x.flatten(1) @ linear.weight[0, :6] + linear.weight[0, 6:][y] + linear.bias
    torch.testing.assert_close(d(x, y)[:, 0], expected)


@pytest.mark.parametrize("name", ["mlp", "dcgan"])
def test_conditional_labels_change_the_output(registry, name: str) -> None:
    shape = (1, 8, 8)
    g = build(registry, "generator", name, SMALL[name], latent_dim=4, out_shape=shape, num_classes=3).eval()
    d = build(registry, "critic", name, SMALL[name], in_shape=shape, out_dim=1, num_classes=3).eval()
    e = build(registry, "encoder", name, SMALL[name], in_shape=shape, out_dim=2, num_classes=3).eval()
    z = torch.randn(1, 4).expand(3, 4)  # the same code for every row
    y = torch.tensor([0, 1, 2])
    x = g(z, y)
    assert not torch.allclose(x[0], x[1]) and not torch.allclose(x[1], x[2])
    torch.testing.assert_close(g(z, y), x)  # deterministic: only y differs between rows
    same_x = x[:1].expand(3, *shape)
    for net in (d, e):
        out = net(same_x, y)
        assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])


@pytest.mark.parametrize("name", ["mlp", "dcgan"])
def test_conditional_without_labels_is_a_clear_error(registry, name: str) -> None:
    g = build(registry, "generator", name, SMALL[name], latent_dim=4, out_shape=(1, 8, 8), num_classes=3)
    d = build(registry, "critic", name, SMALL[name], in_shape=(1, 8, 8), out_dim=1, num_classes=3)
    with pytest.raises(ValueError, match=r"conditional \(3 classes\): pass labels y"):
        g(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"conditional \(3 classes\): pass labels y"):
        d(torch.randn(2, 1, 8, 8))


def test_unconditional_ignores_labels(registry) -> None:
    g = build(registry, "generator", "mlp", {}, latent_dim=4, out_shape=(3,), num_classes=0)
    z = torch.randn(2, 4)
    torch.testing.assert_close(g(z, torch.tensor([0, 5])), g(z))


def test_networks_train(registry) -> None:
    """Gradients reach every parameter of a generator and critic pair."""
    g = build(
        registry, "generator", "dcgan", SMALL["dcgan"], latent_dim=4, out_shape=(1, 28, 28), num_classes=2
    )
    d = build(registry, "critic", "dcgan", SMALL["dcgan"], in_shape=(1, 28, 28), out_dim=1, num_classes=2)
    y = torch.tensor([0, 1, 1])
    d(g(torch.randn(3, 4), y), y).sum().backward()
    for net in (g, d):
        for p in net.parameters():
            assert p.grad is not None and math.isfinite(p.grad.abs().sum().item())


def test_auto_output_is_tanh_for_images_and_linear_for_points(registry) -> None:
    """Points (toy2d) are unbounded: a tanh would pin the ring's modes at (+-1, 0) to its edge."""
    torch.manual_seed(0)
    points = build(registry, "generator", "mlp", {}, latent_dim=2, out_shape=(2,), num_classes=0)
    images = build(registry, "generator", "mlp", {}, latent_dim=2, out_shape=(1, 4, 4), num_classes=0)
    assert isinstance(points.net[-1], torch.nn.Identity)
    assert isinstance(images.net[-1], torch.nn.Tanh)
