"""Tests of the packaged paper reference numbers and their loader.

Besides the shape of the file, the numbers are checked against each other wherever the paper
itself implies a relation (an Avg. column is the mean of its task columns; a setting that appears
in two ablation tables has the same number in both; a claim in the text matches the table it
summarises). Such checks catch a mistyped cell without typing the number a second time here.
"""

from __future__ import annotations

import copy
import re
from decimal import ROUND_HALF_UP, Decimal
from statistics import mean

import pytest

from repro.evaluation.references import (
    PaperNumbersError,
    get_claim,
    get_table,
    load_paper_numbers,
    lookup,
    validate_paper_numbers,
)

STS_TASKS = ["sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr"]


def _cell(table: dict, row: dict, column: str) -> float | None:
    return row["values"][table["columns"].index(column)]


def _value(paper: str, key: str, column: str, **filters) -> float | None:
    return _cell(get_table(paper, key), lookup(paper, key, **filters), column)


def _round1(x: float) -> float:
    """Round half up to one decimal, as papers print (Python's round() is half-to-even on floats)."""
    return float(Decimal(str(x)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


# ---------------------------------------------------------------- shape of the file


def test_file_loads_with_both_papers_and_versioned_sources():
    data = load_paper_numbers()
    assert set(data) >= {"longlora", "simcse"}
    for paper, section in data.items():
        assert re.fullmatch(r"\d{4}\.\d{5}v\d+", str(section["source"]["arxiv"])), paper
        assert section["source"]["title"] and section["source"]["venue"]
        assert section["source"]["read_from"], f"{paper}: say where the numbers were read"


def test_every_table_has_fields_and_one_float_or_null_per_column():
    n_tables = 0
    for paper, section in load_paper_numbers().items():
        for key, table in (section.get("tables") or {}).items():
            n_tables += 1
            for name in ("ref", "caption", "metric", "columns", "rows"):
                assert table.get(name), f"{paper}.{key} lacks {name}"
            assert re.match(r"(Table|Figure) [A-Z]?\.?\d+", table["ref"]), f"{paper}.{key}: ref {table['ref']!r}"
            for i, row in enumerate(table["rows"]):
                assert len(row["values"]) == len(table["columns"]), f"{paper}.{key}.rows[{i}]"
                for value in row["values"]:
                    assert value is None or type(value) is float, f"{paper}.{key}.rows[{i}]: {value!r}"
    assert n_tables >= 10


def test_rows_of_a_table_are_distinguishable_by_their_fields():
    """lookup() can reach every row: no two rows share all their descriptive fields."""
    for paper, section in load_paper_numbers().items():
        for key, table in (section.get("tables") or {}).items():
            keys = [tuple(sorted((k, repr(v)) for k, v in row.items() if k != "values")) for row in table["rows"]]
            assert len(set(keys)) == len(keys), f"{paper}.{key} has indistinguishable rows"


def test_claims_have_provenance_and_numeric_values():
    for paper, section in load_paper_numbers().items():
        for key, claim in (section.get("claims") or {}).items():
            assert claim["provenance"] in ("primary", "secondary", "author_answer", "third_party"), f"{paper}.{key}"
            assert claim["ref"] and claim["statement"]
            assert all(v is None or isinstance(v, float) for v in claim["values"].values()), f"{paper}.{key}"


def test_untranscribed_tables_are_listed_with_a_reason():
    for paper, section in load_paper_numbers().items():
        for entry in section.get("missing") or []:
            assert entry["ref"] and entry["reason"], f"{paper}: {entry}"
    longlora_missing = [entry["ref"] for entry in load_paper_numbers()["longlora"]["missing"]]
    assert "Table 3" in longlora_missing


def test_loaded_data_is_a_copy():
    data = load_paper_numbers()
    data["simcse"]["tables"]["table3_dropout"]["rows"][0]["values"][0] = -1.0
    assert load_paper_numbers()["simcse"]["tables"]["table3_dropout"]["rows"][0]["values"][0] != -1.0


# ---------------------------------------------------------------- validation and look-up errors


@pytest.fixture()
def valid_data() -> dict:
    return copy.deepcopy(load_paper_numbers())


def test_validator_accepts_the_packaged_file(valid_data):
    validate_paper_numbers(valid_data)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["simcse"]["tables"]["table3_dropout"].pop("caption"),
            r"simcse\.tables\.table3_dropout.*caption",
        ),
        (
            lambda d: d["simcse"]["tables"]["table6_pooler"]["rows"][1]["values"].pop(),
            r"table6_pooler\.rows\[1\]\.values.*expected 2",
        ),
        (
            lambda d: d["simcse"]["tables"]["table6_pooler"]["rows"][0]["values"].__setitem__(0, "81.7"),
            r"rows\[0\]\.values\[0\] \(unsup\)",
        ),
        (
            lambda d: d["longlora"]["claims"]["training_setup"].__setitem__("provenance", "memory"),
            r"training_setup\.provenance",
        ),
        (lambda d: d["simcse"]["source"].pop("arxiv"), r"simcse\.source"),
    ],
)
def test_validator_names_the_offending_path(valid_data, mutate, expected):
    mutate(valid_data)
    with pytest.raises(PaperNumbersError, match=expected):
        validate_paper_numbers(valid_data)


def test_unknown_paper_and_table_errors_list_the_choices():
    with pytest.raises(KeyError, match=r"available: \['longlora', 'simcse'\]"):
        get_table("bert", "table1")
    with pytest.raises(KeyError, match=r"no table 'table99'.*table5_sts_main"):
        get_table("simcse", "table99")
    with pytest.raises(KeyError, match=r"not transcribed for longlora: .*Table 3"):
        get_table("longlora", "table3_pg19")
    with pytest.raises(KeyError, match=r"no claim 'nope'.*passkey_retrieval"):
        get_claim("longlora", "nope")


def test_lookup_returns_the_unique_row_and_rejects_zero_or_many():
    row = lookup("simcse", "table5_sts_main", model="simcse-roberta-large", setting="sup")
    assert row["label"] == "SimCSE-RoBERTa-large" and row["setting"] == "sup"
    with pytest.raises(LookupError, match=r"2 rows match .*add filters"):
        lookup("simcse", "table5_sts_main", model="simcse-bert-base")
    with pytest.raises(LookupError, match=r"no row matches"):
        lookup("simcse", "table5_sts_main", model="simcse-bert-large")
    with pytest.raises(KeyError, match=r"unknown row field\(s\) \['encoder'\]"):
        lookup("simcse", "table5_sts_main", encoder="bert")


# ---------------------------------------------------------------- SimCSE: internal consistency


def _avg_tables():
    for key, table in load_paper_numbers()["simcse"]["tables"].items():
        if table["columns"][-1] == "avg" and len(table["columns"]) == 8:
            yield key, table


def test_avg_column_is_the_mean_of_the_seven_tasks():
    checked = 0
    for key, table in _avg_tables():
        for row in table["rows"]:
            gap = abs(mean(row["values"][:7]) - row["values"][7])
            if row.get("avg_mismatch_in_paper"):
                assert gap > 0.01, f"{key} {row}: flagged as inconsistent but is not"
            else:
                assert gap <= 0.01, f"{key} {row.get('model')}: avg off by {gap:.3f}"
            checked += 1
    assert checked >= 70


def test_single_set_tasks_do_not_depend_on_the_aggregation():
    """STS-B and SICK-R are single sets, so 'all' and 'wmean' give the same number (Appendix B)."""
    for model, variant in [("sbert-base", None), ("bert-whitening", "nli"), ("bert-whitening", "target")]:
        for column in ("stsb", "sickr"):
            assert _value("simcse", "tableB2_protocols", column, model=model, variant=variant, protocol="all") == _value(
                "simcse", "tableB2_protocols", column, model=model, variant=variant, protocol="wmean"
            )
    for setting in ("unsup", "sup"):
        for column in ("stsb", "sickr"):
            assert _value("simcse", "tableB3_wmean", column, model="simcse-bert-base", setting=setting) == _value(
                "simcse", "table5_sts_main", column, model="simcse-bert-base", setting=setting
            )


def test_table5_postprocessing_rows_are_the_nli_rows_of_table_c1():
    pairs = {"bert-base-flow": "bert-flow", "bert-base-whitening": "bert-whitening", "sbert-base-flow": "sbert-flow",
             "sbert-base-whitening": "sbert-whitening"}
    for t5_model, c1_model in pairs.items():
        assert lookup("simcse", "table5_sts_main", model=t5_model)["values"] == lookup(
            "simcse", "tableC1_postprocessing", model=c1_model, fit_on="nli"
        )["values"]


def test_unsupervised_default_is_the_same_run_across_ablation_tables():
    """The final unsupervised model (dropout 0.1, [CLS] w/ MLP in training, one encoder) appears in
    Tables 1, 2, 3, 4 and 6 with a single STS-B dev number."""
    numbers = {
        _value("simcse", "table1_data_augmentation", "stsb_dev", augmentation="none"),
        _value("simcse", "table2_unsup_objectives", "one_encoder", objective="unsup_simcse"),
        _value("simcse", "table3_dropout", "stsb_dev", p=0.1, fixed_mask=False),
        _value("simcse", "table4_supervised_datasets", "full", dataset="unsup_simcse"),
        _value("simcse", "table6_pooler", "unsup", pooler="cls_with_mlp_train_only"),
    }
    assert len(numbers) == 1
    assert _value("simcse", "table1_data_augmentation", "stsb_dev", augmentation="delete_one_word") == _value(
        "simcse", "table2_unsup_objectives", "one_encoder", objective="delete_one_word"
    )


def test_supervised_default_is_the_same_run_across_ablation_tables():
    final = {
        _value("simcse", "table4_supervised_datasets", "full", dataset="nli_entailment_hard_neg"),
        _value("simcse", "table6_pooler", "sup", pooler="cls_with_mlp"),
        _value("simcse", "table7_hard_negatives", "stsb_dev", hard_negative="contradiction", alpha=1.0),
        _value("simcse", "tableD1_temperature", "stsb_dev", tau=0.05),
        _value("simcse", "tableD2_mlm", "stsb_dev", mlm_lambda=None),
    }
    assert len(final) == 1
    no_hard_neg = _value("simcse", "table4_supervised_datasets", "full", dataset="nli_entailment")
    assert no_hard_neg == _value("simcse", "table7_hard_negatives", "stsb_dev", hard_negative="none")
    claim = get_claim("simcse", "hard_negative_gain")["values"]
    assert (claim["without_hard_neg"], claim["with_hard_neg"]) == (no_hard_neg, final.pop())


def test_ablation_winners_match_the_text():
    """§3: every dropout rate underperforms p=0.1; §6.3: alpha=1 is best; App. D: tau=0.05 with cosine
    beats every other temperature and the dot product."""
    dropout = get_table("simcse", "table3_dropout")
    best = max(dropout["rows"], key=lambda r: r["values"][0])
    assert (best["p"], best["fixed_mask"]) == (0.1, False)
    temps = get_table("simcse", "tableD1_temperature")["rows"]
    best = max(temps, key=lambda r: r["values"][0])
    assert (best["similarity"], best["tau"]) == ("cosine", 0.05)
    alphas = [r for r in get_table("simcse", "table7_hard_negatives")["rows"] if r["hard_negative"] == "contradiction"]
    top = max(r["values"][0] for r in alphas)
    assert 1.0 in [r["alpha"] for r in alphas if r["values"][0] == top]


def test_figure3_labels_are_table5_averages_rounded():
    pairs = {
        "bert-base-first-last-avg": ("bert-base-first-last-avg", "unsup"),
        "bert-base-flow": ("bert-base-flow", "unsup"),
        "bert-base-whitening": ("bert-base-whitening", "unsup"),
        "unsup-simcse-bert-base": ("simcse-bert-base", "unsup"),
        "sbert-base": ("sbert-base", "sup"),
        "sbert-base-flow": ("sbert-base-flow", "sup"),
        "sbert-base-whitening": ("sbert-base-whitening", "sup"),
        "sup-simcse-bert-base": ("simcse-bert-base", "sup"),
    }
    for fig_model, (model, setting) in pairs.items():
        avg = _value("simcse", "table5_sts_main", "avg", model=model, setting=setting)
        assert _value("simcse", "figure3_align_uniform_avg_sts", "avg_sts", model=fig_model) == _round1(avg), fig_model


def test_abstract_numbers_follow_from_table5():
    claim = get_claim("simcse", "abstract_avg_sts")["values"]
    table = get_table("simcse", "table5_sts_main")
    avg = {(r["model"], r["setting"]): _cell(table, r, "avg") for r in table["rows"]}
    prev_unsup = max(v for (m, s), v in avg.items() if s == "unsup" and not m.startswith("simcse"))
    prev_sup = max(v for (m, s), v in avg.items() if s == "sup" and not m.startswith("simcse"))
    assert claim["unsup_bert_base"] == _round1(avg[("simcse-bert-base", "unsup")])
    assert claim["sup_bert_base"] == _round1(avg[("simcse-bert-base", "sup")])
    assert claim["prev_best_unsup"] == prev_unsup
    assert claim["unsup_gain"] == _round1(avg[("simcse-bert-base", "unsup")] - prev_unsup)
    assert claim["sup_gain"] == _round1(avg[("simcse-bert-base", "sup")] - prev_sup)
    assert claim["sup_roberta_large"] == avg[("simcse-roberta-large", "sup")]


# ---------------------------------------------------------------- LongLoRA: what the text states


def test_longlora_claims_are_internally_consistent():
    gain = get_claim("longlora", "proofpile_same_length_gain")["values"]
    assert gain["llama2_7b_ctx32768"] - gain["llama2_7b_ctx8192"] == pytest.approx(gain["llama2_7b_delta"], abs=1e-9)
    assert gain["llama2_7b_ctx32768"] < gain["llama2_7b_ctx8192"]
    cost = get_claim("longlora", "attention_cost_8192_vs_2048")["values"]
    assert (cost["context_long"] / cost["context_short"]) ** 2 == cost["ratio"]  # quadratic attention cost
    setup = get_claim("longlora", "training_setup")["values"]
    assert setup["per_device_batch"] * setup["grad_accum"] * setup["gpus"] == setup["global_batch"]
    sizes = get_claim("longlora", "max_context_8xa100")["values"]
    assert sizes["llama2_7b"] > sizes["llama2_13b"] > sizes["llama2_70b"]


def test_longlora_tables_agree_with_the_claims_that_summarise_them():
    """Relations the sources state: LoRA+ is close to full FT; ranks 16-256 stay in a range starting at r=8."""
    t2 = {r["method"]: r["values"][0] for r in get_table("longlora", "table2_lora_plus")["rows"]}
    ranks = get_claim("longlora", "table2_lora_ranks_range")["values"]
    assert t2["lora"] == ranks["low"] < ranks["high"]
    assert t2["full_ft"] < t2["lora_plus"] < t2["lora"]
    t6 = get_table("longlora", "table6_attention_patterns")
    s2 = lookup("longlora", "table6_attention_patterns", pattern="s2_shift_heads")["values"]
    # Table 6's full-attention test of S2-Attn + LoRA+ is Table 2's LoRA+ row (same run, same set)
    assert s2[t6["columns"].index("tested_full")] == t2["lora_plus"]
    assert s2[t6["columns"].index("tested_s2")] > s2[t6["columns"].index("tested_full")]
    eff = get_claim("longlora", "table12_efficiency")["values"]
    assert eff["lora_hours"] / eff["longlora_hours"] == pytest.approx(eff["speedup"], abs=0.01)
    assert {e["ref"] for e in load_paper_numbers()["longlora"]["missing"]} >= {"Table 1", "Table 6 (other rows)"}
