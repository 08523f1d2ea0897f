"""W&B dashboards for the ablations: the plan printed offline / on --dry-run, the report built online."""

from __future__ import annotations

import builtins
import importlib
import json
import sys
import types

import pytest
from omegaconf import OmegaConf

from tools import dashboards as D

DROPOUT = {"ref": "SimCSE Table 3", "kind": "simcse", "paper_table": "table3_dropout", "variants": {
    "p0": {"simcse": {"encoder": {"dropout": 0.0}}}, "p0_1": {},
    "fixed_0_1": {"simcse": {"train": {"fixed_dropout": True}}}, "p0_5": {"simcse": {"encoder": {"dropout": 0.5}}}}}
ATTENTION = {"ref": "LongLoRA Table 6", "kind": "longlora", "paper_table": None, "variants": {
    "full": {"longlora": {"attention": {"pattern": "full"}}}, "s2_heads": {}}}


def make_cfg(**ablations):
    return OmegaConf.create({
        "run": {"profile": "tiny", "metrics_dir": "metrics", "plots_dir": "plots"},
        "wandb": {"project_prefix": "repro", "entity": None},
        "longlora": {"train": {"context_length": 512}, "eval": {"lengths": [256, 512]}},
        "ablations": {"name": "", "variant": "", **ablations}})


@pytest.fixture
def params(tmp_path):
    cfg = make_cfg(simcse_dropout=DROPOUT, longlora_attention=ATTENTION)
    path = tmp_path / "params.yaml"
    OmegaConf.save(cfg, path)
    return path


@pytest.fixture
def no_workspaces_import(monkeypatch):
    """Fail the test if anything tries to import wandb_workspaces."""
    real_import, real_import_module = builtins.__import__, importlib.import_module

    def guard(name, *args, **kwargs):
        if name.startswith("wandb_workspaces"):
            raise AssertionError(f"tried to import {name}")
        return real_import(name, *args, **kwargs)

    def guard_module(name, *args, **kwargs):
        if name.startswith("wandb_workspaces"):
            raise AssertionError(f"tried to import {name}")
        return real_import_module(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guard)
    monkeypatch.setattr(importlib, "import_module", guard_module)


@pytest.mark.parametrize("mode, args", [("offline", []), ("online", ["--dry-run"])])
def test_plan_printed_without_importing_workspaces(params, tmp_path, capsys, monkeypatch, no_workspaces_import, mode, args):
    monkeypatch.setenv("WANDB_MODE", mode)
    assert D.main(["--params", str(params), "--root", str(tmp_path), *args]) == 0
    out = capsys.readouterr().out
    for name, project in (("simcse_dropout", "repro-simcse"), ("longlora_attention", "repro-longlora")):
        block = out.split(f"[{name}]")[1].split("\n\n")[0]
        assert f"group: ablation-{name}" in block and f"project: {project}" in block
    assert "eval/stsb_dev_spearman" in out and "train/best_stsb_dev" in out and "ppl@512" in out
    assert "simcse.encoder.dropout, simcse.train.fixed_dropout" in out  # runs grouped by the varied keys
    assert "pip install wandb-workspaces" in out


def test_single_ablation_and_recorded_run_names(params, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    runs = tmp_path / "metrics" / "ablations" / "simcse_dropout" / "runs"
    runs.mkdir(parents=True)
    (runs / "p0.json").write_text(json.dumps({"name": "simcse-train-tiny-x", "id": "abc", "url": None}))
    assert D.main(["--params", str(params), "--ablation", "simcse_dropout", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[longlora_attention]" not in out
    assert "p0 -> simcse-train-tiny-x" in out and "p0_5 -> not run yet" in out
    with pytest.raises(SystemExit, match="nope"):
        D.main(["--params", str(params), "--ablation", "nope"])


class _Recorder:
    """Stands in for a wandb_workspaces class: keeps its keyword arguments."""

    saved: list = []

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def save(self):
        type(self).saved.append(self)


def test_online_build_uses_group_project_and_panels(params, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    fake = types.ModuleType("wandb_workspaces.reports.v2")
    for cls in ("Runset", "LinePlot", "BarPlot", "ScatterPlot", "P", "PanelGrid", "Report"):
        setattr(fake, cls, type(cls, (_Recorder,), {"saved": []}))
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports.v2", fake)
    assert D.main(["--params", str(params), "--ablation", "simcse_dropout", "--root", str(tmp_path)]) == 0
    [report] = fake.Report.saved
    assert report.kwargs["project"] == "repro-simcse"
    grid = report.kwargs["blocks"][-1]
    [runset] = grid.kwargs["runsets"]
    assert runset.kwargs["filters"] == "Group = 'ablation-simcse_dropout'"
    assert runset.kwargs["groupby"] == ["config.simcse.encoder.dropout", "config.simcse.train.fixed_dropout"]
    lines = [p.kwargs["y"] for p in grid.kwargs["panels"] if isinstance(p, fake.LinePlot)]
    bars = [m for p in grid.kwargs["panels"] if isinstance(p, fake.BarPlot) for m in p.kwargs["metrics"]]
    assert ["train/loss"] in lines and ["eval/stsb_dev_spearman"] in lines
    assert {"train/best_stsb_dev", "sts/avg"} <= set(bars)


def test_online_without_package_says_how_to_install(params, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setitem(sys.modules, "wandb_workspaces.reports.v2", None)  # import raises ImportError
    assert D.main(["--params", str(params), "--root", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "[simcse_dropout]" in captured.out and "pip install wandb-workspaces" in captured.err
