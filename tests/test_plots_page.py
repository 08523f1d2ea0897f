"""`dvc plots show` renders offline: vendored vega inlined, one series per model and set, no zero-filled gaps."""

import json
import shutil
from pathlib import Path

import pytest

from tools.plots_page import build_template, find_chromium, ink_fraction, screenshot, show_plots

ROOT = Path(__file__).resolve().parents[1]


def test_committed_template_is_built_from_the_vendored_scripts():
    committed = (ROOT / ".dvc" / "plots" / "offline.html").read_text(encoding="utf-8")
    assert committed == build_template(ROOT), "stale template: run `python -m tools.plots_page`"
    assert "{plot_divs}" in committed and "{scripts}" not in committed
    assert "cdn.jsdelivr" not in committed and "<script src=" not in committed


def test_dvc_config_uses_the_offline_template():
    cfg = (ROOT / ".dvc" / "config").read_text()
    assert "html_template = plots/offline.html" in cfg


def _dvc_page(tmp_path) -> str:
    if shutil.which("dvc") is None:
        pytest.skip("dvc not on PATH")
    return show_plots(ROOT, tmp_path / "plots").read_text(encoding="utf-8")


def _specs(page: str) -> list[dict]:
    """The vega-lite specs DVC embedded (``var spec = {...};`` before each ``vegaEmbed`` call)."""
    specs, decoder, i = [], json.JSONDecoder(), 0
    while (i := page.find("var spec = ", i)) != -1:
        spec, end = decoder.raw_decode(page, i + len("var spec = "))
        specs.append(spec)
        i = end
    return specs


def test_every_plot_draws_one_series_per_model_and_set_without_empty_values(tmp_path):
    page = _dvc_page(tmp_path)
    assert "cdn.jsdelivr" not in page
    specs = _specs(page)
    assert len(specs) >= 4
    for spec in specs:
        assert spec["encoding"]["color"]["field"] == "series"
        assert any("filter" in t and "!== ''" in t["filter"] for t in spec["transform"])
    ppl = next(s for s in specs if "Perplexity" in str(s["title"]))
    pairs = {(d["model"], d["eval_set"]) for d in ppl["data"]["values"]}
    assert len(pairs) > 1  # several models and sets: each must be its own line, keyed by both


@pytest.mark.skipif(find_chromium() is None, reason="no chromium on PATH (apt install chromium)")
def test_page_renders_in_headless_chromium(tmp_path):
    page = show_plots(ROOT, tmp_path / "plots") if shutil.which("dvc") else pytest.skip("dvc not on PATH")
    shot = screenshot(page, tmp_path / "shot.png")
    assert ink_fraction(shot) > 0.01, "the plots page rendered blank"
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body></body></html>")
    assert ink_fraction(screenshot(blank, tmp_path / "blank.png")) < 0.001  # the measure tells blank apart
