"""`python -m repro.check`: the config checks `make repro` runs before DVC removes any output."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from repro.check import check_config, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def params():
    return OmegaConf.load(ROOT / "params.yaml")


def test_committed_params_pass(params):
    assert check_config(params) == []


@pytest.fixture(scope="module")
def full_grid_params(tmp_path_factory):
    """params.yaml of the complete ablation grid (``ablations=full``), as ``dvc exp run -S ablations=full`` writes it."""
    from repro.compose import compose_params

    return OmegaConf.load(compose_params(tmp_path_factory.mktemp("full") / "params.yaml", ["ablations=full"]))


def test_full_grid_passes_and_extends_the_default(params, full_grid_params):
    assert check_config(full_grid_params) == []
    for name in ("longlora_attention", "simcse_dropout", "longlora_context", "simcse_batch"):
        default, full = set(params.ablations[name].variants), set(full_grid_params.ablations[name].variants)
        assert default < full, name  # a strict superset: the default grid is a subset of the complete one


def test_group_size_that_does_not_divide_the_context_is_named(full_grid_params):
    params = full_grid_params
    params.longlora.attention.group_size_ratio = 0.3
    context = int(params.longlora.train.context_length)
    assert context % int(context * 0.3) != 0  # the premise: 0.3 of the context does not divide it
    problems = check_config(params)
    assert problems and problems[0].startswith("longlora.attention")
    assert f"group size {int(context * 0.3)}" in problems[0]
    # the context ablation trains at other lengths: each variant's own group size is checked too
    lengths = (OmegaConf.select(v, "longlora.train.context_length") for v in
               params.ablations.longlora_context.variants.values())
    other = {int(n) for n in lengths if n is not None and int(n) != context}
    assert other, "the context ablation should train at another length"
    for n in other:
        assert any(f"context_length={n}" in p and "ablations.longlora_context" in p for p in problems)


def test_odd_group_with_a_half_shift_is_rejected_but_not_without_shift(params):
    context = int(params.longlora.train.context_length)
    params.longlora.attention.group_size_ratio = 1 / context  # G = 1 divides T but cannot be halved
    params.longlora.attention.shift = "heads"
    assert any("odd" in p for p in check_config(params))
    params.longlora.attention.shift = "none"
    assert not any(p.startswith("longlora.attention") for p in check_config(params))


def test_wrong_type_is_named_before_any_stage_runs(params, tmp_path, capsys):
    params.longlora.train.lr = "abc"
    bad = tmp_path / "params.yaml"
    OmegaConf.save(params, bad)
    assert main(["--params", str(bad)]) == 1
    assert "longlora.train.lr" in capsys.readouterr().err
    assert main(["--params", str(ROOT / "params.yaml")]) == 0


def test_bad_simcse_run_is_named(params):
    params.simcse.runs.sup.temprature = 0.1
    assert any("simcse.runs.sup" in p for p in check_config(params))


def test_check_runs_with_torch_transformers_and_lightning_unimportable(run_without_torch):
    """The check `make repro` runs first needs none of the heavy libraries (schemas: repro.schemas)."""
    out = run_without_torch.module("repro.check")
    assert out.returncode == 0, out.stderr
    assert "config ok" in out.stdout


@pytest.mark.parametrize("key", ["longlora.train.max_stpes", "simcse.train.max_grad_norm",
                                 "longlora.model.gradient_checkpointing"])
def test_misspelt_or_retired_key_fails_by_name_without_torch(params, tmp_path, run_without_torch, key):
    """Negative control for the test above: under the same blocked imports a bad key still fails, named.

    ``max_grad_norm`` and ``gradient_checkpointing`` are the retired spellings of
    ``simcse.train.gradient_clip_val`` and ``longlora.train.activation_checkpointing``.
    """
    OmegaConf.update(params, key, 1, force_add=True)
    bad = tmp_path / "params.yaml"
    OmegaConf.save(params, bad)
    out = run_without_torch.module("repro.check", "--params", str(bad))
    assert out.returncode == 1
    assert key in out.stderr
    assert "ModuleNotFoundError" not in out.stderr and "ImportError" not in out.stderr
