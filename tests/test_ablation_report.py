"""The ablation report: variants collected from metric files, paper rows matched by config values,
claims computed from the numbers and decided only where their positive control shows the effect,
figures written as PNG."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from repro.evaluation.references import get_table, lookup
from repro.reporting import INCONCLUSIVE, verdict
from repro.reports import ablations as A
from repro.reports import results as R
from repro.reports.ablation_rows import paper_value
from repro.reports.controls import Controls

BASE = {
    "run": {"profile": "tiny", "metrics_dir": "metrics", "plots_dir": "plots"},
    "wandb": {"project_prefix": "repro", "entity": None},
    "longlora": {"model": {"source": "tiny", "original_context": 128}, "train": {"context_length": 512, "max_steps": 10},
                 "attention": {"pattern": "s2", "shift": "heads", "wrap": False, "direction": "left"},
                 "adapter": {"mode": "lora_plus", "r": 8, "trainable_extra": ["embed", "norm"]},
                 "eval": {"lengths": [256, 512]}},
    "simcse": {"encoder": {"source": "tiny", "dropout": 0.1, "pooler": "avg", "mlp_only_train": False},
               "data": {"source": "synthetic"},
               "train": {"mode": "unsup", "temperature": 0.05, "hard_negative_weight": 0.0, "fixed_dropout": False,
                         "batch_size": 64, "max_steps": 10},
               "runs": {"unsup": {}, "sup": {"mode": "sup"}}},
}
DROPOUT = {"ref": "SimCSE Table 3", "kind": "simcse", "paper_table": "table3_dropout", "variants": {
    "p0": {"simcse": {"encoder": {"dropout": 0.0}}}, "p0_1": {},
    "fixed_0_1": {"simcse": {"train": {"fixed_dropout": True}}}, "p0_5": {"simcse": {"encoder": {"dropout": 0.5}}}}}
CONTROL = {"ref": "control", "kind": "longlora", "paper_table": None, "passkey_curve": True, "variants": {
    "full_attn_full_ft": {"longlora": {"attention": {"pattern": "full"}, "adapter": {"mode": "full"}}}}}
ATTENTION = {"ref": "LongLoRA Table 6", "kind": "longlora", "paper_table": None, "variants": {
    "full": {"longlora": {"attention": {"pattern": "full"}}}, "short": {"longlora": {"attention": {"shift": "none"}}},
    "s2_heads": {}, "only_pattern2": {"longlora": {"attention": {"shift": "all"}}}}}


def make_cfg(**ablations):
    return OmegaConf.create({**BASE, "ablations": {"name": "", "variant": "", "longlora_control": CONTROL, **ablations}})


def write_control(root: Path, short: float = 3.0, long: float = 2.5, passkey: float = 1.0) -> None:
    """The full-attention full fine-tuning control: ppl at the original (128) and training (512) context."""
    write_variant(root, "longlora_control", "full_attn_full_ft", **{
        "ppl@128": short, "ppl@512": long, **{f"passkey@{p}": passkey for p in (256, 512)}})


def claims(root: Path, cfg, name: str):
    return A.claims(name, R.collect(root, cfg, name), cfg.ablations[name], Controls(cfg, root))


def write_variant(root: Path, ablation: str, variant: str, **metrics) -> None:
    path = root / "metrics" / "ablations" / ablation / f"{variant}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    status = metrics.pop("status", "ok")
    path.write_text(json.dumps({"status": status, "ablation": ablation, "variant": variant, **metrics}))


def write_curve(root: Path, ablation: str, variant: str, rows: list[dict]) -> None:
    path = root / "plots" / "ablations" / ablation / f"{variant}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(rows[0])
    path.write_text("\n".join([",".join(keys), *(",".join(str(r[k]) for k in keys) for r in rows)]) + "\n")


def table_row(page: str, variant: str) -> list[str]:
    line = next(x for x in page.splitlines() if x.startswith(f"| {variant} |"))
    return [c.strip() for c in line.strip("|").split(" | ")]


def claim_verdicts(rows):
    return [r[3] for r in rows]


@pytest.fixture
def dropout_root(tmp_path):
    write_variant(tmp_path, "simcse_dropout", "p0", **{"train/best_stsb_dev": 40.0, "sts/avg": 35.0})
    write_variant(tmp_path, "simcse_dropout", "p0_1", **{"train/best_stsb_dev": 55.0, "sts/avg": 50.0})
    write_variant(tmp_path, "simcse_dropout", "fixed_0_1", status="failed", error="RuntimeError: out of memory | GPU0")
    return tmp_path


def test_collect_keeps_every_variant_in_config_order(dropout_root):
    cfg = make_cfg(simcse_dropout=DROPOUT, longlora_attention=ATTENTION)
    res = R.collect(dropout_root, cfg, "simcse_dropout")
    assert [r.variant for r in res] == list(DROPOUT["variants"])
    assert {r.variant: r.status for r in res} == {"p0": "ok", "p0_1": "ok", "fixed_0_1": "failed", "p0_5": "missing"}
    assert res[2].error == "RuntimeError: out of memory | GPU0"
    assert res[1].value("train/best_stsb_dev") == 55.0 and res[3].value("train/best_stsb_dev") is None
    assert [r.status for r in R.collect(dropout_root, cfg, "longlora_attention")] == ["missing"] * 4
    with pytest.raises(KeyError, match="nope"):
        R.collect(dropout_root, cfg, "nope")


def test_page_shows_failed_and_missing_variants(dropout_root):
    cfg = make_cfg(simcse_dropout=DROPOUT, longlora_attention=ATTENTION)
    page = A.build(cfg, dropout_root, dropout_root / "reports")
    for variant in [*DROPOUT["variants"], *ATTENTION["variants"]]:
        table_row(page, variant)  # every configured variant has a row
    assert table_row(page, "p0_5")[2] == "missing"
    assert table_row(page, "fixed_0_1")[2] == r"failed: RuntimeError: out of memory \| GPU0"
    assert table_row(page, "p0_1")[3] == "55.00"
    assert "## simcse_dropout" in page and "## longlora_attention" in page and "Profile **tiny**" in page


def test_paper_value_follows_config_values_not_names(dropout_root):
    misnamed = {**DROPOUT, "variants": {"looks_like_p0": {"simcse": {"train": {"fixed_dropout": True}}}}}
    cfg = make_cfg(simcse_dropout=misnamed)
    write_variant(dropout_root, "simcse_dropout", "looks_like_p0", **{"train/best_stsb_dev": 20.0})
    expected = lookup("simcse", "table3_dropout", p=0.1, fixed_mask=True)["values"][0]
    [res] = R.collect(dropout_root, cfg, "simcse_dropout")
    assert paper_value("table3_dropout", res.config)[1] == expected
    page = A.build(cfg, dropout_root, dropout_root / "reports")
    row = table_row(page, "looks_like_p0")
    assert row[5] == f"{expected:.1f}" and "Δ (ours − paper)" not in page  # no difference shown at tiny scale
    paper_cfg = OmegaConf.merge(cfg, {"run": {"profile": "paper"}})
    row = table_row(A.build(paper_cfg, dropout_root, dropout_root / "reports"), "looks_like_p0")
    assert row[5] == f"{expected:.1f}" and float(row[6]) == pytest.approx(20.0 - expected, abs=0.01)


@pytest.mark.parametrize("diff, run, table, filters, column", [
    ({"simcse": {"train": {"temperature": 0.1}}}, "unsup", "tableD1_temperature", {"tau": 0.1}, "stsb_dev"),
    ({"simcse": {"encoder": {"pooler": "cls", "mlp_only_train": True}}}, "unsup", "table6_pooler",
     {"pooler": "cls_with_mlp_train_only"}, "unsup"),
    ({"simcse": {"encoder": {"pooler": "cls_before_pooler"}}}, "sup", "table6_pooler", {"pooler": "cls_without_mlp"}, "sup"),
    ({"simcse": {"train": {"hard_negative_weight": -math.inf}}}, "sup", "table7_hard_negatives",
     {"hard_negative": "none"}, "stsb_dev"),
    ({"simcse": {"train": {"hard_negative_weight": math.log(2.0)}}}, "sup", "table7_hard_negatives",
     {"hard_negative": "contradiction", "alpha": 2.0}, "stsb_dev"),
])
def test_paper_value_matching_rules(diff, run, table, filters, column):
    vcfg = R.variant_config(make_cfg(), diff)
    t = get_table("simcse", table)
    expected = lookup("simcse", table, **filters)["values"][t["columns"].index(column)]
    assert paper_value(table, vcfg, run)[1] == expected


def test_checkpoint_dropout_matches_no_dropout_row_but_other_tables_still_match():
    """encoder.dropout null (a pretrained checkpoint keeps its own rate, as the mini and paper encoders do)."""
    vcfg = R.variant_config(make_cfg(), {"simcse": {"encoder": {"dropout": None}, "train": {"temperature": 0.1}}})
    assert paper_value("table3_dropout", vcfg, "unsup") is None
    t = get_table("simcse", "tableD1_temperature")
    expected = lookup("simcse", "tableD1_temperature", tau=0.1)["values"][t["columns"].index("stsb_dev")]
    assert paper_value("tableD1_temperature", vcfg, "unsup")[1] == expected


def test_hard_negatives_have_no_row_in_unsupervised_mode():
    vcfg = R.variant_config(make_cfg(), {"simcse": {"train": {"hard_negative_weight": 0.0}}})
    assert paper_value("table7_hard_negatives", vcfg, "unsup") is None
    assert paper_value("table7_hard_negatives", vcfg, "sup")[1] == lookup(
        "simcse", "table7_hard_negatives", hard_negative="contradiction", alpha=1.0)["values"][0]


@pytest.mark.parametrize("devs", [{"p0": 40.0, "p0_1": 55.0, "fixed_0_1": 30.0, "p0_5": 50.0},
                                  {"p0": 50.0, "p0_1": 55.0, "fixed_0_1": 50.0, "p0_5": 60.0},
                                  {"p0": 60.0, "p0_1": 55.0, "fixed_0_1": 50.0, "p0_5": 20.0}])
def test_dropout_claims_both_directions_and_their_control(tmp_path, devs):
    cfg = make_cfg(simcse_dropout=DROPOUT)
    for v, d in devs.items():
        write_variant(tmp_path, "simcse_dropout", v, **{"train/best_stsb_dev": d})
    rows = claims(tmp_path, cfg, "simcse_dropout")
    if devs["p0_1"] <= devs["p0"]:  # control: dropout noise must beat identical views (p = 0)
        assert all(v.startswith(INCONCLUSIVE) for v in claim_verdicts(rows)), rows
        assert "identical views" in claim_verdicts(rows)[0]
        return
    free = [devs[v] for v in ("p0", "p0_1", "p0_5")]
    best = "held" if devs["p0_1"] == max(free) else "not held"
    far = "held" if devs["p0_1"] - devs["fixed_0_1"] >= R.FAR_WORSE_POINTS else "not held"
    assert claim_verdicts(rows) == [best, far]
    assert rows[0][2].startswith("p0_1 55.00 vs p0")  # the control's evidence is shown


def test_claims_read_missing_when_an_input_is_missing(dropout_root):
    cfg = make_cfg(simcse_dropout=DROPOUT, longlora_attention=ATTENTION)
    rows = claims(dropout_root, cfg, "simcse_dropout")
    assert claim_verdicts(rows) == ["missing", "missing"]  # p0_5 missing; fixed_0_1 failed
    write_variant(dropout_root, "longlora_attention", "full", **{"ppl@512": 10.0})
    rows = claims(dropout_root, cfg, "longlora_attention")
    assert claim_verdicts(rows) == ["missing", "missing", "missing"]
    assert "missing" in A.build(cfg, dropout_root, dropout_root / "r").split("longlora_attention")[-1]


@pytest.mark.parametrize("ppl", [{"full": 10.0, "short": 14.0, "s2_heads": 10.3, "only_pattern2": 11.0},
                                 {"full": 10.0, "short": 9.0, "s2_heads": 12.0, "only_pattern2": 11.0}])
@pytest.mark.parametrize("control", ["uses the context", "does not", "missing"])
def test_attention_claims_both_directions_on_their_control(tmp_path, ppl, control):
    cfg = make_cfg(longlora_attention=ATTENTION)
    for v, p in ppl.items():
        write_variant(tmp_path, "longlora_attention", v, **{"ppl@512": p, "ppl@256": p + 1})
    if control != "missing":
        write_control(tmp_path, short=3.0, long=2.5 if control == "uses the context" else 3.2)
    rows = claims(tmp_path, cfg, "longlora_attention")
    if control == "does not":
        assert all(v.startswith(INCONCLUSIVE) and "does not use the longer context" in v for v in claim_verdicts(rows))
        return
    if control == "missing":
        assert claim_verdicts(rows) == [f"{INCONCLUSIVE} (control missing)"] * 3
        return
    close = abs(ppl["s2_heads"] - ppl["full"]) / ppl["full"] <= 0.05
    worse = ppl["short"] > ppl["s2_heads"]
    worse2 = ppl["only_pattern2"] > ppl["s2_heads"]
    assert claim_verdicts(rows) == ["held" if close else "not held", "held" if worse else "not held",
                                    "held" if worse2 else "not held"]
    assert rows[0][2] == "full_attn_full_ft (full attention, full fine-tuning): ppl 3.00 @128 → 2.50 @512"


def test_control_ablation_reports_its_controls(tmp_path):
    cfg = make_cfg()
    write_control(tmp_path, short=3.0, long=2.5, passkey=0.8)
    rows = claims(tmp_path, cfg, "longlora_control")
    assert [r[3] for r in rows] == ["shown", "not shown"]  # context used; passkey 0.8 < 0.9
    assert "0.80 at worst over 2 points" in rows[1][1]


@pytest.mark.parametrize("last", [(5.0, 4.98), (5.0, 4.0), (30.0, 5.0)])
def test_steps_claims_and_figure(tmp_path, last):
    spec = {"ref": "LongLoRA Figure 5", "kind": "longlora_steps", "paper_table": None,
            "variants": {"lora_plus": {}, "full_ft": {"longlora": {"adapter": {"mode": "full"}}}}}
    cfg = make_cfg(longlora_steps=spec)
    for v, end in zip(("lora_plus", "full_ft"), last, strict=False):
        write_variant(tmp_path, "longlora_steps", v, **{"ppl@512": end, "step0/ppl_s2@512": 25.0})
        write_curve(tmp_path, "longlora_steps", v, [{"step": 0, "ppl": 20.0}, {"step": 5, "ppl": 12.0},
                                                   {"step": 10, "ppl": end}])
    write_control(tmp_path)
    rows = claims(tmp_path, cfg, "longlora_steps")
    decreasing = all(end < 20.0 for end in last)
    within = last[0] <= 1.01 * last[1]
    assert claim_verdicts(rows) == ["held" if decreasing else "not held", "held" if within else "not held"]
    page = A.build(cfg, tmp_path, tmp_path / "reports")
    fig = tmp_path / "reports" / "figures" / "ablation_longlora_steps_ppl_vs_step.png"
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(figures/ablation_longlora_steps_ppl_vs_step.png)" in page


def test_context_batch_and_pooler_claims(tmp_path):
    ctx = {"ref": "LongLoRA Tables 3/4", "kind": "longlora", "paper_table": None,
           "variants": {"ctx256": {"longlora": {"train": {"context_length": 256}}}, "ctx512": {}}}
    batch = {"ref": "SimCSE Appendix A", "kind": "simcse", "paper_table": None,
             "variants": {"b32": {"simcse": {"train": {"batch_size": 32}}}, "b64": {}}}
    pooler = {"ref": "SimCSE Table 6", "kind": "simcse", "paper_table": "table6_pooler", "variants": {
        "mlp_train_only": {"simcse": {"encoder": {"pooler": "cls", "mlp_only_train": True}}},
        "first_last_avg": {"simcse": {"encoder": {"pooler": "avg_first_last"}}}}}
    cfg = make_cfg(longlora_context=ctx, simcse_batch=batch, simcse_pooler=pooler)
    write_control(tmp_path)
    write_variant(tmp_path, "longlora_context", "ctx256", **{"ppl@256": 9.0})
    write_variant(tmp_path, "longlora_context", "ctx512", **{"ppl@256": 8.0, "ppl@512": 7.0})
    write_variant(tmp_path, "simcse_batch", "b32", **{"train/best_stsb_dev": 50.0, "train/best_stsb_dev/std": 0.5})
    write_variant(tmp_path, "simcse_batch", "b64", **{"train/best_stsb_dev": 53.0, "train/best_stsb_dev/std": 0.4})
    write_variant(tmp_path, "simcse_pooler", "mlp_train_only", **{"train/best_stsb_dev": 50.0, "stsb_test/uniform": -3.1})
    write_variant(tmp_path, "simcse_pooler", "first_last_avg", **{"train/best_stsb_dev": 52.0, "stsb_test/uniform": -3.5})
    verdicts = {n: claim_verdicts(claims(tmp_path, cfg, n)) for n in ("longlora_context", "simcse_batch", "simcse_pooler")}
    paper_best = max(get_table("simcse", "table6_pooler")["rows"], key=lambda r: r["values"][0])["pooler"]
    assert verdicts == {"longlora_context": ["held"],  # 8.0 < 9.0 at 256, the longest common length
                        "simcse_batch": ["not held"],  # spread 3 points, seed std 0.5 resolves 2 points
                        "simcse_pooler": ["held" if paper_best == "first_last_avg" else "not held"]}
    # a collapsed variant (uniformity ~ 0) or a wide seed spread leaves the claim undecided
    write_variant(tmp_path, "simcse_pooler", "mlp_train_only", **{"train/best_stsb_dev": 50.0, "stsb_test/uniform": -6e-5})
    [pool] = claim_verdicts(claims(tmp_path, cfg, "simcse_pooler"))
    assert pool.startswith(INCONCLUSIVE) and "collapsed" in pool and "mlp_train_only" in pool
    write_variant(tmp_path, "simcse_batch", "b32", **{"train/best_stsb_dev": 50.0, "train/best_stsb_dev/std": 4.0})
    [batch_v] = claim_verdicts(claims(tmp_path, cfg, "simcse_batch"))
    assert batch_v.startswith(INCONCLUSIVE) and "too wide" in batch_v


def test_supervised_ablations_need_sts_data_independent_of_the_nli_generator(tmp_path):
    temp = {"ref": "SimCSE Table D.1", "kind": "simcse", "paper_table": "tableD1_temperature", "run": "sup",
            "variants": {"tau0_05": {}, "tau0_1": {"simcse": {"train": {"temperature": 0.1}}}}}
    for source, expect in (("synthetic", INCONCLUSIVE), ("local", "held")):
        cfg = OmegaConf.merge(make_cfg(simcse_temperature=temp), {"simcse": {"data": {"source": source}}})
        write_variant(tmp_path, "simcse_temperature", "tau0_05", **{"train/best_stsb_dev": 80.0})
        write_variant(tmp_path, "simcse_temperature", "tau0_1", **{"train/best_stsb_dev": 70.0})
        [v] = claim_verdicts(claims(tmp_path, cfg, "simcse_temperature"))
        assert v.startswith(expect), (source, v)


def test_dropout_figures_are_png_and_referenced(dropout_root):
    cfg = make_cfg(simcse_dropout=DROPOUT)
    for v in ("p0", "p0_1"):
        write_curve(dropout_root, "simcse_dropout", v, [
            {"step": 0, "loss": 1.0, "lr": 1e-3, "stsb_dev_spearman": "", "align": "", "uniform": ""},
            {"step": 5, "loss": 0.5, "lr": 1e-3, "stsb_dev_spearman": 30.0, "align": 0.4, "uniform": -2.0},
            {"step": 10, "loss": 0.4, "lr": 1e-3, "stsb_dev_spearman": 35.0, "align": 0.5, "uniform": -2.6}])
    page = A.build(cfg, dropout_root, dropout_root / "reports")
    for name in ("align_uniform", "dev_vs_p"):
        rel = f"figures/ablation_simcse_dropout_{name}.png"
        assert f"({rel})" in page
        assert (dropout_root / "reports" / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table6_paper_values_sit_beside_the_matching_variant(tmp_path):
    cfg = make_cfg(longlora_attention=ATTENTION)
    write_variant(tmp_path, "longlora_attention", "s2_heads", **{"ppl@512": 4.321, "ppl_own@512": 4.987})
    write_variant(tmp_path, "longlora_attention", "full", **{"ppl@512": 4.0})
    page = A.build(cfg, tmp_path, tmp_path / "r")
    row = next(line for line in page.splitlines() if line.startswith("| S2-Attn (shift among heads)"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:] == ["8.64", "8.12", "s2_heads", "4.99", "4.32"]  # paper S2 / full, ours S2 / full


def test_best_claim_with_seeds_holds_only_beyond_the_spread():
    from repro.reporting import Control
    from repro.reports.ablation_claims import _best_claim
    from repro.reports.ablations import _mean_std
    from repro.reports.results import VariantResult

    def v(name, mean, std):
        return VariantResult("a", name, "ok", {"eval/best": mean, "eval/best/std": std, "seeds": [1, 2, 3]})

    ok = Control(True, "shown")
    clear = [v("x", 80.0, 0.5), v("y", 78.0, 0.5)]
    close = [v("x", 80.0, 1.5), v("y", 78.0, 1.5)]  # 80 − 1.5 = 78.5 < 78 + 1.5 = 79.5
    assert _best_claim("x best", clear, clear[0], ok, key="eval/best")[3] == verdict(True)
    assert _best_claim("x best", close, close[0], ok, key="eval/best")[3] == verdict(False)
    assert _best_claim("x best", clear, clear[0], Control(False, "no", "why"), key="eval/best")[3] == f"{INCONCLUSIVE} (why)"
    assert _mean_std(clear[0], "eval/best") == "80.00 ± 0.50 (n=3)"
    single = VariantResult("a", "z", "ok", {"eval/best": 70.0})
    assert _mean_std(single, "eval/best") == "70.00"
