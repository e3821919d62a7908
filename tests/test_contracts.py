"""Every registered component keeps its kind's contract (``genfw.testing``).

The cases are collected from the registry itself, so a new built-in is checked the moment its
entry point exists: a loss without gradients to the fake scores, a prior whose ``log_prob``
disagrees with its ``sample``, a variant whose phase does not train, fails here. Third-party
authors run the same checks through ``genfw.testing`` (see ``docs/plugins.md``).
"""

from __future__ import annotations

import pytest
import torch

from genfw import testing
from genfw.plugins import get_registry

CASES = testing.contract_cases(get_registry())


# Sample counts are a metric's accuracy, not its contract: the contract runs them small.
SMALL = {"num_samples": 256, "num_examples": 128, "importance_samples": 8}


def small_options(kind: str, name: str) -> dict:
    if kind != "metric":
        return {}
    fields = {n for n, _, _ in get_registry().get(kind, name).option_fields()}
    return {k: v for k, v in SMALL.items() if k in fields}


@pytest.mark.parametrize(("kind", "name"), CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_component_keeps_its_contract(kind, name):
    torch.manual_seed(0)
    testing.check(kind, name, options=small_options(kind, name))


def test_every_kind_has_a_check_and_cases():
    from genfw.hookspecs import KINDS

    assert set(testing.CHECKS) | set(testing.NETWORK_KINDS) == set(KINDS)
    kinds = {k for k, _ in CASES}
    assert {"loss", "prior", "variant", "generator", "critic", "dataset"} <= kinds


# Metrics whose default extractor needs weights that tests do not have (Inception) are checked
# again with the weight-free ``raw`` extractor, so their contract is not only skipped.
RAW = [
    n for n in ("fid", "kid", "precision_recall", "density_coverage") if n in get_registry().names("metric")
]


@pytest.mark.parametrize("name", RAW)
def test_feature_metrics_keep_the_contract_with_the_raw_extractor(name):
    torch.manual_seed(0)
    small = {"extractor": "raw", "num_samples": 300, "progress": False}
    if name == "kid":
        small.update(subsets=5, subset_size=100)
    testing.check("metric", name, options=small)


# Components with required options (a path, weights) are skipped by the sweep above; these give
# them what they need. Left out: `inception` (its contract would need the 95 MB weights file;
# tests/test_extractors.py checks its loading and pipeline on a state dict it makes) and
# `torchvision` (an optional extra that does not import beside the CPU build of torch).


@pytest.fixture(scope="module")
def digits_evaluator(tmp_path_factory):
    from genfw import cli

    out = tmp_path_factory.mktemp("evaluator") / "digits.safetensors"
    argv = ["train-evaluator", "--dataset", "digits", "--steps", "60", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    return str(out)


def test_classifier_extractor_and_inception_score_keep_the_contract(digits_evaluator, tmp_path, monkeypatch):
    monkeypatch.setenv("GENFW_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    testing.check("extractor", "classifier", options={"weights": digits_evaluator})
    opts = {"extractor": "classifier", "weights": digits_evaluator, "num_samples": 256, "progress": False}
    testing.check("metric", "is", options=opts)


def test_image_folder_keeps_the_dataset_contract(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    testing.check("dataset", "image-folder", options={"path": str(tmp_path)})
