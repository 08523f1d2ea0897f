"""Config composition: params.yaml in sync with conf/, every option validates, typos fail by name."""

from __future__ import annotations

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
    from repro.workflows.simcse import run_train_config

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
