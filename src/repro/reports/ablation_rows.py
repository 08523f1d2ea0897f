"""The paper's row that matches an ablation variant, found from the variant's effective config values.

SimCSE: dropout and fixed mask for Table 3, temperature for Table D.1, pooler + ``mlp_only_train`` for
Table 6, the hard-negative weight ``log alpha`` for Table 7 - never the variant's name.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repro.evaluation.references import get_table


def simcse_settings(vcfg: DictConfig, run: str = "unsup") -> dict[str, Any]:
    """The variant's SimCSE values that the paper's ablation tables vary.

    ``simcse.train`` is overlaid with ``simcse.runs[run]`` (the ablation's ``run``, as
    :func:`repro.simcse_runs.run_train_config` does); alpha = exp(hard_negative_weight), the
    reference code adding the weight to the hard-negative logit (SimCSE §4, Table 7). ``p`` is None
    where ``encoder.dropout`` is null (the pretrained checkpoint keeps its own rate, which the report
    stage does not load a checkpoint to learn); such a variant matches no row of the dropout table.
    """
    sc = vcfg.simcse
    runs = sc.get("runs") or {}
    train = OmegaConf.merge(sc.train, runs.get(run) or {})
    weight = float(train.hard_negative_weight)
    dropout = sc.encoder.get("dropout")
    return {"p": None if dropout is None else float(dropout), "fixed": bool(train.fixed_dropout),
            "tau": float(train.temperature),
            "alpha": 0.0 if weight == -math.inf else math.exp(weight), "pooler": str(sc.encoder.pooler),
            "mlp_only_train": bool(sc.encoder.mlp_only_train), "mode": str(train.mode),
            "batch_size": int(train.batch_size), "similarity": str(train.get("similarity", "cosine"))}


_TABLE6_POOLERS = MappingProxyType({("cls", False): "cls_with_mlp", ("cls", True): "cls_with_mlp_train_only",
                                    ("cls_before_pooler", False): "cls_without_mlp",
                                    ("cls_before_pooler", True): "cls_without_mlp",
                                    ("avg_first_last", False): "first_last_avg", ("avg_first_last", True): "first_last_avg"})


def _row_query(table: str, s: dict[str, Any]) -> tuple[dict[str, Any], str, str] | None:
    """(row filters, column, label) of the paper row matching settings ``s``; None if the table has none."""
    if table == "table3_dropout":
        if s["p"] is None:
            return None
        return {"p": s["p"], "fixed_mask": s["fixed"]}, "stsb_dev", f"p={s['p']:g}" + (", fixed mask" if s["fixed"] else "")
    if table == "tableD1_temperature":
        if s.get("similarity") == "dot":  # Table D.1's "N/A" row: dot product instead of cosine, no τ
            return {"similarity": "dot"}, "stsb_dev", "dot product"
        return {"similarity": "cosine", "tau": s["tau"]}, "stsb_dev", f"τ={s['tau']:g}"
    if table == "table6_pooler":
        name = _TABLE6_POOLERS.get((s["pooler"], s["mlp_only_train"]))
        return ({"pooler": name}, s["mode"], name) if name else None
    if table == "table7_hard_negatives":
        if s["mode"] != "sup":  # Table 7 is supervised: NLI contradictions are the hard negatives
            return None
        if s["alpha"] == 0.0:
            return {"hard_negative": "none"}, "stsb_dev", "no hard negative (α=0)"
        return {"hard_negative": "contradiction", "alpha": s["alpha"]}, "stsb_dev", f"contradiction, α={s['alpha']:g}"
    raise ValueError(f"paper_table {table!r} has no matching rule; known: table3_dropout, tableD1_temperature, "
                     "table6_pooler, table7_hard_negatives")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return a == b
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def paper_value(table: str, vcfg: DictConfig, run: str = "unsup") -> tuple[str, float | None] | None:
    """(row label, value) of SimCSE ``table`` matching the variant's config, or None when no row matches."""
    query = _row_query(table, simcse_settings(vcfg, run))
    if query is None:
        return None
    filters, column, label = query
    t = get_table("simcse", table)
    rows = [r for r in t["rows"] if all(_same(r.get(k), v) for k, v in filters.items())]
    if len(rows) != 1 or column not in t["columns"]:
        return None
    return f"{t['ref']}: {rows[0].get('label', label)}", rows[0]["values"][t["columns"].index(column)]


