"""W&B conventions: run names, offline mode, reading offline runs back, metrics files."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from repro import tracking


def _cfg(tmp_path):
    return OmegaConf.create({"wandb": {"project_prefix": "repro", "entity": None, "group": None, "dir": str(tmp_path)},
                             "run": {"profile": "tiny"}, "longlora": {"train": {"max_steps": 7}}})


def test_run_name_is_built_in_one_place():
    name = tracking.make_run_name("longlora", "train", "tiny", {"attn": "s2 heads", "ctx": 512, "skip": None})
    assert name == "longlora-train-tiny-attn=s2-heads-ctx=512"


def test_mode_is_offline_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert tracking.wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.wandb_mode() == "disabled"


def test_offline_run_reads_back_what_was_logged(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = _cfg(tmp_path)
    run = tracking.init_run(cfg, "longlora", "train", "longlora-train-tiny", "grp")
    losses = [2.0, 1.5, 1.25]
    for step, loss in enumerate(losses):
        run.log({"train/loss": loss}, step=step)
    run.summary["eval/ppl@512"] = 3.5
    info = tracking.record_run(run, tmp_path / "runs" / "train.json")
    run.finish()
    folders = tracking.find_offline_runs(tmp_path / "wandb")
    assert len(folders) == 1
    back = tracking.read_offline_run(folders[0])
    assert back["run"]["project"] == "repro-longlora" and back["run"]["group"] == "grp"
    assert back["run"]["job_type"] == "train" and back["run"]["name"] == "longlora-train-tiny"
    assert [h["train/loss"] for h in back["history"]] == losses
    assert back["summary"]["eval/ppl@512"] == 3.5
    assert back["config"]["longlora"]["train"]["max_steps"] == 7
    assert info["id"] == back["run"]["run_id"] and info["url"] is None
    assert "wandb sync" in tracking.run_link(info)


def test_read_offline_run_rejects_other_files(tmp_path):
    (tmp_path / "run-x.wandb").write_bytes(b"not a wandb file at all")
    with pytest.raises(ValueError, match="not a W&B run file"):
        tracking.read_offline_run(tmp_path)
    with pytest.raises(FileNotFoundError):
        tracking.read_offline_run(tmp_path / "missing")


def test_metrics_files_are_flat_json(tmp_path):
    tracking.write_metrics(tmp_path / "m" / "eval.json", {"eval/ppl@512": 3.0, "b": 1})
    assert json.loads((tmp_path / "m" / "eval.json").read_text()) == {"b": 1, "eval/ppl@512": 3.0}
    tracking.write_csv(tmp_path / "p.csv", [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}])
    assert (tmp_path / "p.csv").read_text().splitlines() == ["step,loss", "1,2.0", "2,1.0"]
    with pytest.raises(ValueError, match="no rows"):
        tracking.write_csv(tmp_path / "q.csv", [])
