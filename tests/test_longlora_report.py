"""The LongLoRA report page: both protocols, S2 vs full testing, passkey curve, paper values beside ours."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from repro.reports import longlora as page
from repro.tracking import write_csv

REPO = Path(__file__).resolve().parents[1]


def test_page_puts_ours_beside_the_paper(tmp_path):
    cfg = OmegaConf.load(REPO / "params.yaml")
    target = int(cfg.longlora.train.context_length)
    val = cfg.longlora.data.roles.pg19_validation
    plots = tmp_path / cfg.run.plots_dir / "longlora"
    rows = []
    for model, base in (("base_pi", 9.0), ("finetuned", 3.0)):
        for set_name in cfg.longlora.data.eval_sets:
            rows += [{"model": model, "eval_set": set_name, "length": n, "attention": "full", "ppl": base + 1000 / n,
                      "ppl_newest": base + 900 / n, "windows": 4, "tokens_per_s": 1.0} for n in (128, target)]
            rows.append({"model": model, "eval_set": set_name, "length": target, "attention": "s2",
                         "ppl": base + 0.777, "ppl_newest": base + 0.5, "windows": 4, "tokens_per_s": 1.0})
    write_csv(plots / "ppl_vs_length.csv", rows)
    write_csv(plots / "passkey.csv", [{"model": m, "target": t, "length": t - 5, "accuracy": a, "beyond_training": t > target}
                                      for m, a in (("base_pi", 0.1), ("finetuned", 0.9)) for t in (64, target, 2 * target)])
    text = page.build(cfg, tmp_path, tmp_path / "reports")
    ft_full, ft_s2 = 3.0 + 1000 / target, 3.0 + 0.777
    beside = [line for line in text.splitlines() if line.startswith("| Table 6: S2-Attn, tested with")]
    assert any("8.64" in line and f"{ft_s2:.2f}" in line for line in beside)
    assert any("8.12" in line and f"{ft_full:.2f}" in line for line in beside)
    step0 = next(line for line in text.splitlines() if line.startswith("| Figure 5 step 0"))
    assert "15.82" in step0 and f"{9.0 + 0.777:.2f}" in step0
    assert f"`{val}` (pg19_validation)" in text
    assert "Not yet transcribed from the paper" in text and "Table 6 (other rows)" in text
    assert str(target - 5) in text  # passkey columns are the mean prompt lengths
    assert (tmp_path / "reports" / "figures" / "longlora_passkey.png").is_file()
    claim = next(line for line in text.splitlines() if "Passkey retrieval within" in line)
    assert "0.10 → 0.90" in claim
