"""The SimCSE report page: the STS table per run, no paper delta below paper scale, and the supervised
claim decided only on STS data independent of the NLI training data (its positive control)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from repro.reports import simcse as page

REPO = Path(__file__).resolve().parents[1]
TASKS = ("sts12", "sts13", "sts14", "sts15", "sts16")


def _write(root: Path, cfg, avgs: dict[str, float]) -> None:
    metrics = root / cfg.run.metrics_dir / "simcse"
    metrics.mkdir(parents=True, exist_ok=True)
    for run, avg in avgs.items():
        ev = {"sts/avg": avg, "sts/stsb/test": avg + 1, "sts/sickr/test": avg - 1,
              **{f"sts/{t}/{agg}": avg for t in TASKS for agg in ("all", "mean", "wmean")}}
        (metrics / f"eval_{run}.json").write_text(json.dumps(ev))
        (metrics / f"train_{run}.json").write_text(json.dumps({"train/steps": 10, "train/best_stsb_dev": avg}))


def _claim(text: str) -> list[str]:
    line = next(x for x in text.splitlines() if x.startswith("| Supervised SimCSE beats unsupervised"))
    return [c.strip() for c in line.strip("|").split(" | ")]


def test_supervised_claim_stands_on_independent_sts_data(tmp_path):
    cfg = OmegaConf.load(REPO / "params.yaml")
    _write(tmp_path, cfg, {"unsup": 60.0, "sup": 90.0})
    synthetic = OmegaConf.merge(cfg, {"simcse": {"data": {"source": "synthetic"}}})
    claim = _claim(page.build(synthetic, tmp_path, tmp_path / "reports"))
    assert claim[1] == "sup 90.00 vs unsup 60.00"
    assert claim[3].startswith("inconclusive at this scale") and "grammar" in claim[3]
    real = OmegaConf.merge(cfg, {"simcse": {"data": {"source": "local"}}})
    assert _claim(page.build(real, tmp_path, tmp_path / "reports"))[3] == "held"
    _write(tmp_path, cfg, {"unsup": 70.0, "sup": 65.0})
    assert _claim(page.build(real, tmp_path, tmp_path / "reports"))[3] == "not held"


def test_paper_delta_only_at_paper_scale(tmp_path):
    cfg = OmegaConf.load(REPO / "params.yaml")
    _write(tmp_path, cfg, {"unsup": 60.0, "sup": 90.0})
    assert "delta (ours all − paper)" not in page.build(cfg, tmp_path, tmp_path / "reports")
    paper = OmegaConf.merge(cfg, {"run": {"profile": "paper"}})
    assert "delta (ours all − paper)" in page.build(paper, tmp_path, tmp_path / "reports")
