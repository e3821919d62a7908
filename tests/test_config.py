"""Config resolution: defaults, files, overrides, and the errors a user can cause."""

from __future__ import annotations

import pytest

from genfw import GenfwError
from genfw.cli import parse_overrides
from genfw.config import load_file, merge, resolve, with_command_line


def test_defaults_are_filled_and_round_trip(registry):
    cfg = resolve({"variant": "wae", "prior": "spike_slab"}, registry)
    assert cfg.variant.name == "wae"
    assert cfg.dataset.name == "digits"  # the embedded default
    assert {s: spec.name for s, spec in cfg.slots.items()} == {
        "encoder": "mlp",
        "generator": "mlp",
        "prior": "spike_slab",
        "loss": "mse",
        "critic": "mlp",  # the latent adversary of --plugin.penalty gan
        "adversarial": "non_saturating",
    }
    assert list(cfg.regularisers) == ["mmd"]  # the variant's own
    assert cfg.regularisers["mmd"].options.weight == 10.0
    again = resolve(cfg.to_dict(), registry)
    assert again.to_dict() == cfg.to_dict()


def test_cli_overrides_beat_the_file(tmp_path, registry):
    f = tmp_path / "run.yaml"
    f.write_text(
        "variant: {name: wae, latent_dim: 4}\nprior: {name: spike_slab, alpha: 0.2}\ntrain: {steps: 7}\n"
    )
    raw = merge(load_file(f), parse_overrides(["--prior.alpha", "0.3", "--steps", "9"], ["variant.lr=0.01"]))
    cfg = resolve(raw, registry)
    assert cfg.slots["prior"].options.alpha == pytest.approx(0.3)
    assert cfg.variant.options.latent_dim == 4
    assert cfg.variant.options.lr == pytest.approx(0.01)
    assert cfg.train.steps == 9


def test_toml_file(tmp_path, registry):
    f = tmp_path / "run.toml"
    f.write_text(
        'variant = "gan"\ndataset = "toy2d"\n[train]\nsteps = 3\n[regularisers.gradient_penalty]\nweight = 2.5\n'
    )
    cfg = resolve(load_file(f), registry)
    assert cfg.dataset.name == "toy2d"
    assert cfg.regularisers["gradient_penalty"].options.weight == 2.5
    assert list(cfg.metrics) == ["mode_coverage"]  # toy2d's default metric


def test_name_then_options_and_options_then_name(registry):
    a = resolve(
        merge({}, parse_overrides(["--prior", "spike_slab", "--prior.alpha", "0.25", "--plugin", "wae"], [])),
        registry,
    )
    b = resolve(
        merge({}, parse_overrides(["--prior.alpha", "0.25", "--prior", "spike_slab", "--plugin", "wae"], [])),
        registry,
    )
    assert a.to_dict() == b.to_dict()
    assert a.slots["prior"].options.alpha == 0.25


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"variant": "nope"},
            "unknown variant 'nope' for variant; registered variants: aae, acgan,",
        ),
        (
            {"variant": "gan", "encoder": "mlp"},
            "variant 'gan' has no slot 'encoder'; its slots: critic, generator, loss, prior",
        ),
        ({"variant": "gan", "trian": {}}, "unknown config key 'trian'; valid keys for variant 'gan':"),
        ({"variant": "wae", "prior": "spik"}, "unknown prior 'spik' for prior; registered priors:"),
        (
            {"variant": "wae", "prior": {"name": "spike_slab", "alpha": "x"}},
            "prior.alpha: expected a number, got 'x'",
        ),
        ({"variant": "wae", "prior": {"name": "spike_slab", "alpha": 1.5}}, "alpha must be in (0, 1]"),
        (
            {"variant": "wae", "prior": {"name": "normal", "alpha": 1}},
            "prior.alpha: unknown option; prior 'normal' takes no options",
        ),
        ({"variant": "gan", "train": {"steps": 2.5}}, "train.steps: expected an integer, got 2.5"),
        ({"variant": "gan", "train": {"stepz": 2}}, "train.stepz: unknown option"),
        (
            {"variant": "gan", "loss": "mse"},
            "slot 'loss' of variant 'gan' takes adversarial ones: hinge, least_squares, minimax, non_saturating,",
        ),
        (
            {"variant": "vae", "regularisers": {"gradient_penalty": {}}},
            "variants it applies to: aae, acgan,",
        ),
        ({"variant": "gan", "dataset": {"name": "image-folder", "path": "/no/such/dir"}}, None),
    ],
)
def test_bad_config_is_one_clear_line(registry, raw, expected):
    if expected is None:  # validated when the data set is built, not at resolve time
        cfg = resolve(raw, registry)
        with pytest.raises(GenfwError, match="/no/such/dir"):
            cfg.dataset.build()
        return
    with pytest.raises(GenfwError) as info:
        resolve(raw, registry)
    message = str(info.value)
    assert "\n" not in message
    assert expected in message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(GenfwError, match="does not exist"):
        load_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("variant: [unclosed\n")
    with pytest.raises(GenfwError, match="is not valid"):
        load_file(bad)
    ini = tmp_path / "x.ini"
    ini.write_text("a=1")
    with pytest.raises(GenfwError, match="unknown format"):
        load_file(ini)


def test_parse_overrides_forms():
    got = parse_overrides(
        [
            "--prior",
            "spike_slab",
            "--prior.alpha=0.3",
            "--regulariser",
            "gradient_penalty",
            "--regulariser.gradient_penalty.weight",
            "5",
            "--batch-size",
            "32",
            "--generator.hidden",
            "[8, 8]",
        ],
        ["train.seed=3"],
    )
    assert got == [
        ("prior", "spike_slab"),
        ("prior.alpha", 0.3),
        ("regularisers.gradient_penalty", {}),
        ("regularisers.gradient_penalty.weight", 5),
        ("train.batch_size", 32),
        ("generator.hidden", [8, 8]),
        ("train.seed", 3),
    ]
    with pytest.raises(GenfwError, match="needs a value"):
        parse_overrides(["--prior"], [])
    with pytest.raises(GenfwError, match="KEY=VALUE"):
        parse_overrides([], ["prior.alpha"])


def test_variant_preset_for_the_data_kind_and_user_values_win(registry):
    """wgan-gp on 2-D points takes the authors' toy settings (gan_toy.py); images keep the paper's."""
    toy = resolve({"variant": "wgan-gp", "dataset": "toy2d"}, registry)
    assert toy.regularisers["gradient_penalty"].options.weight == 0.1
    assert toy.variant.options.latent_dim == 2 and toy.variant.options.beta1 == 0.5
    assert toy.train.batch_size == 256
    digits = resolve({"variant": "wgan-gp", "dataset": "digits"}, registry)
    assert digits.regularisers["gradient_penalty"].options.weight == 10.0
    assert digits.variant.options.latent_dim == 64 and digits.train.batch_size == 64
    mine = resolve(
        merge(
            {"dataset": "toy2d"},
            parse_overrides(
                [
                    "--plugin",
                    "wgan-gp",
                    "--plugin.latent_dim",
                    "8",
                    "--regulariser.gradient_penalty.weight",
                    "3",
                    "--batch-size",
                    "32",
                ],
                [],
            ),
        ),
        registry,
    )
    assert mine.variant.options.latent_dim == 8 and mine.variant.options.beta1 == 0.5
    assert mine.regularisers["gradient_penalty"].options.weight == 3
    assert mine.train.batch_size == 32
    # The written config replays to the same thing.
    assert resolve(toy.to_dict(), registry).to_dict() == toy.to_dict()


def test_naming_another_network_drops_the_presets_network_options(registry):
    """wgan-gp's points preset sets mlp options (hidden, activation); a user who names another
    network gets that network with its own defaults, not an error about options they never set."""
    cfg = resolve(
        merge({"dataset": "toy2d"}, parse_overrides(["--plugin", "wgan-gp", "--critic", "dcgan"], [])),
        registry,
    )
    assert cfg.slots["critic"].name == "dcgan" and cfg.slots["critic"].options.channels == 64
    assert cfg.slots["generator"].options.hidden == [400, 400, 400, 400]  # the preset still holds here
    # Naming the preset's own network keeps its options; so does setting an option alone.
    same = resolve({"variant": "wgan-gp", "dataset": "toy2d", "critic": "mlp"}, registry)
    assert same.slots["critic"].options.hidden == [200, 200, 200]
    mine = resolve({"variant": "wgan-gp", "dataset": "toy2d", "critic": {"hidden": [8]}}, registry)
    assert mine.slots["critic"].options.hidden == [8] and mine.slots["critic"].options.activation == "relu"


def test_naming_a_regulariser_keeps_its_file_options(tmp_path, registry):
    f = tmp_path / "run.yaml"
    f.write_text("variant: gan\nregularisers: {gradient_penalty: {weight: 2.5}}\n")
    cfg = resolve(merge(load_file(f), parse_overrides(["--regulariser", "gradient_penalty"], [])), registry)
    assert cfg.regularisers["gradient_penalty"].options.weight == 2.5
    # A list of names in the file takes dotted options too.
    f.write_text("variant: gan\nregularisers: [gradient_penalty]\n")
    raw = merge(load_file(f), parse_overrides(["--regulariser.gradient_penalty.weight", "4"], []))
    assert resolve(raw, registry).regularisers["gradient_penalty"].options.weight == 4


def test_exponent_floats_are_numbers_on_the_command_line_and_in_yaml(tmp_path, registry):
    # PyYAML (YAML 1.1) reads 1e-4 as a string; researchers write it for learning rates.
    from genfw.config import parse_value

    assert parse_value("1e-4") == 1e-4 and parse_value("-2.5E+3") == -2500.0
    assert parse_value("[1e-3, 2]") == [0.001, 2] and parse_value("1e") == "1e"
    path = tmp_path / "run.yaml"
    path.write_text("variant: {name: gan, lr_generator: 1e-4}\n")
    cfg = resolve(merge(load_file(path), parse_overrides(["--plugin.lr_critic", "4e-4"], [])), registry)
    assert cfg.variant.options.lr_generator == 1e-4 and cfg.variant.options.lr_critic == 4e-4


def test_a_config_that_names_metrics_gets_exactly_those(registry):
    # Without the key: the data set's defaults and the variant's preset ones for the data.
    assert list(resolve({"variant": "gan", "dataset": "toy2d"}, registry).metrics) == ["mode_coverage"]
    assert list(resolve({"variant": "vae"}, registry).metrics) == ["autoencoding"]  # its image preset
    # With it: exactly those, the preset's autoencoding included only when named.
    assert list(resolve({"variant": "gan", "dataset": "toy2d", "metrics": {}}, registry).metrics) == []
    assert list(resolve({"variant": "vae", "metrics": {}}, registry).metrics) == []
    assert list(resolve({"variant": "vae", "metrics": ["fid"]}, registry).metrics) == ["fid"]
    cfg = resolve({"variant": "vae", "metrics": {"autoencoding": {"importance_samples": 8}}}, registry)
    assert cfg.metrics["autoencoding"].options.importance_samples == 8
    # So the resolved config.yaml replays to the same metrics.
    assert resolve(cfg.to_dict(), registry).to_dict() == cfg.to_dict()


def test_metric_flags_add_to_the_metrics_the_run_computes_anyway(tmp_path, registry):
    def metrics(flags, raw=None, sets=(), default_metrics=True):
        overrides = parse_overrides(flags, list(sets))
        cfg = resolve(
            with_command_line(raw or {}, overrides, registry, default_metrics=default_metrics), registry
        )
        return {name: spec.options for name, spec in cfg.metrics.items()}

    toy = ["--dataset", "toy2d"]
    assert list(metrics([*toy, "--metric", "fid"])) == ["mode_coverage", "fid"]  # not fid alone
    assert list(metrics(["--plugin", "vae", "--metric", "fid"])) == ["autoencoding", "fid"]
    # An option of a default metric keeps the others' defaults.
    coverage = metrics([*toy, "--metric.mode_coverage.num_samples", "500"])
    assert list(coverage) == ["mode_coverage"] and coverage["mode_coverage"].num_samples == 500
    # --no-default-metrics: only the named ones, or none.
    assert list(metrics([*toy, "--metric", "fid"], default_metrics=False)) == ["fid"]
    assert list(metrics(["--plugin", "vae", "--metric", "kid"], default_metrics=False)) == ["kid"]
    assert metrics(toy, default_metrics=False) == {}
    # A file's metrics: exactly those, and flags add to them.
    f = tmp_path / "run.yaml"
    f.write_text("variant: vae\nmetrics: {fid: {num_samples: 300}}\n")
    assert list(metrics([], load_file(f))) == ["fid"]
    both = metrics(["--metric", "kid"], load_file(f))
    assert list(both) == ["fid", "kid"] and both["fid"].num_samples == 300
    # --set metrics=... sets the whole list.
    assert list(metrics(toy, sets=["metrics=[kid]"])) == ["kid"]
