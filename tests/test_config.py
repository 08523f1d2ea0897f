"""Config composition: params.yaml in sync with conf/, every option validates, typos fail by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from repro.compose import compose_params
from repro.config import ConfigError, validate

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["data", "model", "attention", "adapter", "encoder", "sentence_data", "profile"]


def _compose(tmp_path: Path, overrides: list[str]):
    out = compose_params(tmp_path / "params.yaml", overrides)
    return OmegaConf.load(out)


def test_params_yaml_matches_conf(tmp_path, repo_root):
    composed = yaml.safe_load(compose_params(tmp_path / "p.yaml", []).read_text())
    committed = yaml.safe_load((repo_root / "params.yaml").read_text())
    assert committed == composed, "params.yaml is stale: run `python -m repro.compose`"


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_validates(tmp_path, group):
    options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    assert options, f"no options in conf/{group}"
    for option in options:
        cfg = validate(_compose(tmp_path, [f"{group}={option}"]))
        assert cfg is not None


def test_unknown_override_fails_at_composition(tmp_path):
    with pytest.raises(Exception, match="max_stpes"):
        _compose(tmp_path, ["longlora.train.max_stpes=3"])


def test_misspelt_yaml_key_fails_with_its_name(tmp_path):
    cfg = _compose(tmp_path, [])
    cfg.longlora.train.max_stpes = 3  # as if a YAML file had the typo
    with pytest.raises(ConfigError, match="longlora.train.max_stpes"):
        validate(cfg)


def test_wrong_type_fails_with_key_name(tmp_path):
    cfg = _compose(tmp_path, [])
    cfg.longlora.train.max_steps = "many"
    with pytest.raises(ConfigError, match="longlora.train.max_steps"):
        validate(cfg)


def test_unknown_simcse_run_key_fails(tmp_path):
    from repro.simcse_runs import run_train_config

    cfg = _compose(tmp_path, [])
    cfg.simcse.runs.sup.temprature = 0.1
    with pytest.raises(ConfigError, match="simcse.runs.sup"):
        run_train_config(cfg, "sup")
    with pytest.raises(ConfigError, match="unknown SimCSE run 'nope'"):
        run_train_config(cfg, "nope")


def test_profiles_scale_the_recipe(tmp_path):
    tiny = validate(_compose(tmp_path, []))
    paper = validate(_compose(tmp_path, ["profile=paper"]))
    assert tiny.run.profile == "tiny" and paper.run.profile == "paper"
    assert paper.longlora.model.name_or_path == "meta-llama/Llama-2-7b-hf"
    assert paper.longlora.train.lr == 2e-5 and paper.longlora.eval.stride == 256
    assert paper.longlora.train.context_length > paper.longlora.model.original_context


def test_composed_config_has_no_absolute_paths(tmp_path):
    text = compose_params(tmp_path / "p.yaml", []).read_text()
    for line in text.splitlines():
        value = line.split(":", 1)[-1].strip()
        assert not value.startswith("/"), f"absolute path in params.yaml: {line}"


def test_validation_does_not_import_the_workflows(repo_root):
    """config.py names the schemas (repro.stages holds the workflows' own); no config <-> workflows circle."""
    import json
    import subprocess
    import sys

    code = ("import sys, json; from omegaconf import OmegaConf; from repro.config import validate; "
            "validate(OmegaConf.load('params.yaml')); print(json.dumps(sorted(m for m in sys.modules "
            "if m.startswith('repro.workflows'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_config_core_imports_nothing_heavy(run_without_torch):
    """repro.schemas and repro.derived: the standard library only; config, cli and compose: no torch stack."""
    code = ("import json, repro.schemas, repro.derived\n"
            "light = sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'omegaconf', 'yaml'))\n"
            "import repro.config, repro.cli, repro.compose, repro.check\n"
            "print(json.dumps(light))\n")
    out = run_without_torch(code)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_validate_and_compose_run_with_torch_unimportable(tmp_path, repo_root, run_without_torch):
    """Compose conf/ (DVC's composer) and validate the result, with torch, transformers and lightning blocked."""
    out = run_without_torch.module("repro.compose", "-o", str(tmp_path / "p.yaml"))
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load((tmp_path / "p.yaml").read_text()) == yaml.safe_load((repo_root / "params.yaml").read_text())
    code = (f"from omegaconf import OmegaConf\nfrom repro.config import validate\n"
            f"cfg = validate(OmegaConf.load({str(tmp_path / 'p.yaml')!r}))\nprint(cfg.longlora.train.precision)\n")
    out = run_without_torch(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "32-true"


@pytest.fixture()
def params(repo_root):
    return OmegaConf.load(repo_root / "params.yaml")


@pytest.mark.parametrize("old, new", [
    ("simcse.train.max_grad_norm", "simcse.train.gradient_clip_val"),
    ("longlora.train.checkpointing", "longlora.train.activation_checkpointing"),
    ("longlora.model.gradient_checkpointing", "longlora.train.activation_checkpointing"),
    ("longlora.eval.bf16", "longlora.eval.precision"),
])
def test_one_key_per_concern_and_the_retired_keys_fail_by_name(params, old, new):
    assert OmegaConf.select(params, new) is not None
    OmegaConf.update(params, old, OmegaConf.select(params, new), force_add=True)
    with pytest.raises(ConfigError, match=old.replace(".", r"\.")):
        validate(params)


def test_both_trainers_spell_clip_and_precision_alike(params):
    cfg = validate(params)
    for section in (cfg.longlora.train, cfg.simcse.train):
        assert section.gradient_clip_val == 1.0
        assert section.precision == "32-true"


@pytest.mark.parametrize("key, value, allowed", [
    ("longlora.train.precision", "32", "32-true, 16-mixed, bf16-mixed, bf16-true"),
    ("simcse.train.precision", "fp32", "32-true, 16-mixed, bf16-mixed, bf16-true"),
    ("longlora.eval.precision", "16-mixed", "32-true, bf16-mixed"),
    ("longlora.train.activation_checkpointing", "model", "none, full, alternate"),
    ("longlora.model.dtype", "fp32", "float32, bfloat16, float16"),
    ("simcse.encoder.dtype", "bf16", "float32, bfloat16, float16"),
])
def test_a_value_outside_its_allowed_set_fails_listing_them(params, key, value, allowed):
    OmegaConf.update(params, key, value)
    with pytest.raises(ConfigError) as info:
        validate(params)
    assert f"{key}={value!r} is not one of {allowed}" in str(info.value)


def test_profiles_checkpoint_activations_as_the_reference(tmp_path):
    """LongLoRA's fine-tune.py checkpoints every layer; the GPU profiles do, the CPU one does not."""
    assert validate(_compose(tmp_path, [])).longlora.train.activation_checkpointing == "none"
    for profile in ("mini", "paper"):
        assert validate(_compose(tmp_path, [f"profile={profile}"])).longlora.train.activation_checkpointing == "full"
