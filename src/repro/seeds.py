"""Seed aggregation: the mean, sample spread and per-seed values of repeated runs.

Published SimCSE reproductions report 1–3 points of seed variance on STS, so an ablation ordering is only
"held" when it holds beyond the spread (:func:`ordering_held`). Used by the stages that run several seeds
(:func:`repro.workflows.simcse.run_seeds`) and by the report pages; imports nothing heavy.
"""

from __future__ import annotations

import math
from typing import Any


def aggregate_seeds(per_seed: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Per-seed metric dicts → ``key`` (mean), ``key/std`` (sample std, ddof=1; 0 for one seed), ``key/per_seed``.

    Only numeric keys present in every seed's dict are aggregated; ``seeds`` is recorded as ``seeds``.
    """
    keys = [k for k in per_seed[0] if all(isinstance(m.get(k), (int, float)) and not isinstance(m.get(k), bool)
                                          for m in per_seed)]
    out: dict[str, Any] = {"seeds": list(seeds)}
    for key in keys:
        vals = [float(m[key]) for m in per_seed]
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        out[key], out[f"{key}/std"], out[f"{key}/per_seed"] = mean, std, vals
    return out


def ordering_held(better: tuple[float, float], worse: tuple[float, float]) -> bool:
    """Whether ``better`` (mean, std) beats ``worse`` beyond the spread: mean_b − std_b > mean_w + std_w."""
    return better[0] - better[1] > worse[0] + worse[1]
