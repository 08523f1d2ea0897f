"""W&B conventions: run names, offline mode, reading offline runs back, metrics files."""

from __future__ import annotations

import json
import logging
import os
import re
import time

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


@pytest.mark.parametrize("attempt", range(20))
def test_offline_run_reads_back_what_was_logged(monkeypatch, tmp_path, attempt):
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
    assert back["complete"] and back["exit_code"] == 0
    assert "wandb sync" in tracking.run_link(info)


def _finished_run_file(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = tracking.init_run(_cfg(tmp_path), "longlora", "train", "late-writer", "grp")
    run.log({"train/loss": 1.0}, step=0)
    run.finish()
    folder = tracking.find_offline_runs(tmp_path / "wandb")[0]
    assert tracking.read_offline_run(folder)["complete"]  # the writer has flushed: the file below is whole
    return folder, sorted(folder.glob("run-*.wandb"))[0]


def test_reader_waits_for_a_writer_that_has_not_flushed(monkeypatch, tmp_path):
    """A file still being written (header only, then a torn record) is re-read until the exit record lands."""
    import threading

    folder, path = _finished_run_file(monkeypatch, tmp_path)
    full = path.read_bytes()
    path.write_bytes(full[: len(full) // 3])  # as W&B's writer leaves it mid-flush: a torn record
    partial = tracking.read_offline_run(folder, wait_s=0.0)
    assert not partial["complete"]
    timer = threading.Timer(0.5, path.write_bytes, args=(full,))
    timer.start()
    back = tracking.read_offline_run(folder, wait_s=20.0)
    timer.join()
    assert back["complete"] and back["run"]["name"] == "late-writer"
    assert [h["train/loss"] for h in back["history"]] == [1.0]


def _online_with_key(monkeypatch, url: str) -> None:
    import wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "")  # recorded, so that what the fallback sets is undone after the test
    monkeypatch.delenv("WANDB_ERROR_REPORTING")
    wandb.teardown()  # W&B's process-wide service keeps the settings (base URL) it was started with


def _wandb_warnings(caplog) -> list[str]:
    """Warnings about W&B, except W&B's own logger (its debug.log, not the stage's output)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            and r.name.split(".")[0] != "wandb" and re.search(r"w(?:and)?&?b", r.getMessage(), re.I)]


def test_unreachable_server_falls_back_to_offline(monkeypatch, caplog, fake_wandb_server):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _online_with_key(monkeypatch, f"http://127.0.0.1:{port}")
    with caplog.at_level("WARNING", logger="repro"):
        assert tracking.resolve_mode(timeout_s=1.0) == "offline"
    assert len([r for r in caplog.records if "unreachable" in r.message]) == 1
    monkeypatch.setenv("WANDB_BASE_URL", fake_wandb_server("http").url)  # and one that answers stays online
    assert tracking.resolve_mode(timeout_s=1.0) == "online"


@pytest.mark.parametrize("kind", ["silent", "garbage"])
def test_server_that_accepts_but_does_not_answer_http_is_unreachable(monkeypatch, caplog, fake_wandb_server, kind):
    """A TCP connect succeeds, yet the probe's HTTP request gets no (or no HTTP) answer: offline within the timeout."""
    server = fake_wandb_server(kind)
    _online_with_key(monkeypatch, server.url)
    start = time.monotonic()
    with caplog.at_level("WARNING", logger="repro"):
        assert tracking.resolve_mode(timeout_s=1.0) == "offline"
    assert time.monotonic() - start < 3.0
    assert server.requests == ["GET"]
    (warning,) = _wandb_warnings(caplog)
    assert f"W&B server {server.url} unreachable within 1 s" in warning, warning
    assert os.environ["WANDB_ERROR_REPORTING"] == "false"  # W&B would report its errors to that server at exit


@pytest.mark.parametrize("kind", ["silent", "http-garbage", "probe-only"])
def test_init_run_falls_back_offline_with_one_warning(monkeypatch, tmp_path, caplog, fake_wandb_server, kind):
    """``probe-only`` passes the probe and then leaves ``wandb.init`` waiting: W&B's ``init_timeout`` (set to
    ``wandb.init_timeout_s``, not its 90 s default) ends it; ``http-garbage`` passes the probe and makes
    ``wandb.init`` fail at once. Either way one warning, and the run is written offline."""
    server = fake_wandb_server(kind)
    _online_with_key(monkeypatch, server.url)
    cfg = _cfg(tmp_path)
    cfg.wandb.init_timeout_s = 2
    start = time.monotonic()
    with caplog.at_level("WARNING"):
        run = tracking.init_run(cfg, "longlora", "train", "longlora-train-tiny", "grp")
    elapsed = time.monotonic() - start
    run.log({"train/loss": 1.0})
    run.finish()
    warnings = _wandb_warnings(caplog)
    assert len(warnings) == 1 and "unreachable within 2 s" in warnings[0], warnings
    assert run.offline
    assert elapsed < 20, elapsed  # the probe's or W&B's 2 s, plus starting W&B twice
    if kind != "silent":
        assert "POST" in server.requests, server.requests  # the probe passed: wandb.init itself was bounded
    (folder,) = tracking.find_offline_runs(tmp_path / "wandb")
    back = tracking.read_offline_run(folder)
    assert back["complete"] and back["exit_code"] == 0
    assert [h["train/loss"] for h in back["history"]] == [1.0]


def test_only_global_rank_zero_tracks_and_writes(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("RANK", "1")
    assert not tracking.is_global_zero()
    run = tracking.init_run(_cfg(tmp_path), "longlora", "train", "rank1", "grp")
    run.log({"train/loss": 1.0})
    run.finish()
    tracking.write_metrics(tmp_path / "m.json", {"a": 1})
    assert not (tmp_path / "m.json").exists() and not tracking.find_offline_runs(tmp_path / "wandb")
    monkeypatch.setenv("RANK", "0")
    assert tracking.is_global_zero()
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "1")
    assert not tracking.is_global_zero()


def test_resumed_stage_continues_the_same_run(monkeypatch, tmp_path):
    from repro.resume import resumable_run_id

    monkeypatch.setenv("WANDB_MODE", "offline")
    run_id = resumable_run_id(tmp_path / "ckpt")
    assert run_id == resumable_run_id(tmp_path / "ckpt")  # kept in the checkpoint folder
    assert run_id != resumable_run_id(tmp_path / "other-ckpt")
    for attempt in range(2):
        run = tracking.init_run(_cfg(tmp_path), "longlora", "train", "resumable", "grp", run_id=run_id)
        run.log({"train/loss": float(attempt)})
        run.finish()
    ids = {tracking.read_offline_run(f)["run"]["run_id"] for f in tracking.find_offline_runs(tmp_path / "wandb")}
    assert ids == {run_id}


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
