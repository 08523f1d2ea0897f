"""The result model of the ablation pages: every variant of an ablation as found on disk.

An ablation is ``ablations.<name>`` in the config: ``ref`` (the paper table or figure), ``kind``
(``longlora`` | ``longlora_steps`` | ``simcse``), ``paper_table`` (a SimCSE key of
``paper_numbers.yaml`` or null) and ``variants`` (name -> config diff merged over the root config).
Each variant wrote ``metrics/ablations/<name>/<variant>.json`` (``status`` ``ok`` or ``failed``), its
W&B run info under ``runs/`` and, where it logs curves, ``plots/ablations/<name>/<variant>.csv``.
A variant of the config without a metrics file is *missing*. Shared by the page
(:mod:`repro.reports.ablations`), the claim checks (:mod:`repro.reports.ablation_claims`) and the
positive controls (:mod:`repro.reports.controls`); reads JSON and CSV only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repro.reporting import md_cell, read_csv, read_json

KINDS = ("longlora", "longlora_steps", "simcse")
STATUSES = ("ok", "failed", "missing")
DEV = "train/best_stsb_dev"  # SimCSE's model-selection metric; every ablation table of the paper reports it
FAR_WORSE_POINTS = 10.0  # "far worse" for the fixed-mask claim (the paper's gap is 38.9 points)


@dataclass(frozen=True)
class VariantResult:
    """One variant of an ablation as found on disk.

    Attributes:
        ablation, variant: names from the config.
        status: ``ok`` | ``failed`` | ``missing`` (no metrics file).
        metrics: the flat metrics JSON ({} when missing).
        error: the recorded error of a failed variant (or why its file could not be read).
        run_info: the W&B run record (:func:`repro.tracking.record_run`), or None.
        curve: rows of the variant's curve CSV ([] when none).
        diff: the variant's config diff as a plain dict.
        config: the root config with the diff merged in (what the variant ran with).
    """

    ablation: str
    variant: str
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    run_info: dict[str, Any] | None = None
    curve: list[dict[str, str]] = field(default_factory=list)
    diff: dict[str, Any] = field(default_factory=dict)
    config: DictConfig | None = None

    def value(self, key: str) -> float | None:
        """A finite numeric metric of an ``ok`` variant, else None."""
        v = self.metrics.get(key) if self.status == "ok" else None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        return float(v)

    @property
    def status_text(self) -> str:
        """``ok`` / ``missing`` / ``failed: <error>`` for a table cell."""
        return md_cell(f"failed: {self.error}") if self.status == "failed" else self.status


def ablation_names(cfg: DictConfig) -> list[str]:
    """The ablations of ``cfg.ablations`` in config order (entries with ``variants``)."""
    abl = cfg.get("ablations") or {}
    return [k for k, v in abl.items() if isinstance(v, DictConfig) and "variants" in v]


def ablation_spec(cfg: DictConfig, ablation: str) -> DictConfig:
    """``cfg.ablations[ablation]``; KeyError naming the known ablations, ValueError for a bad kind."""
    names = ablation_names(cfg)
    if ablation not in names:
        raise KeyError(f"unknown ablation {ablation!r}; ablations in the config: {names}")
    spec = cfg.ablations[ablation]
    if spec.get("kind") not in KINDS:
        raise ValueError(f"ablations.{ablation}.kind={spec.get('kind')!r}; expected one of {KINDS}")
    return spec


def variant_config(cfg: DictConfig, diff: Any) -> DictConfig:
    """The root config with a variant's diff merged in (as the ablation runner does)."""
    return OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(cfg)), diff or {})


def _read_status(path: Path) -> tuple[str, dict[str, Any], str | None]:
    if not path.is_file():
        return "missing", {}, None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return "failed", {}, f"unreadable metrics file {path}: {err}"
    if not isinstance(data, dict):
        return "failed", {}, f"{path}: expected a JSON object"
    status = data.get("status")
    if status == "ok":
        return "ok", data, None
    if status == "failed":
        return "failed", data, str(data.get("error") or "no error message recorded")
    return "failed", data, f"{path}: 'status' is {status!r}, expected 'ok' or 'failed'"


def collect(root: Path, cfg: DictConfig, ablation: str) -> list[VariantResult]:
    """Every variant of ``ablation`` in config order, with what its files hold (none dropped)."""
    spec = ablation_spec(cfg, ablation)
    mdir = Path(root) / cfg.run.metrics_dir / "ablations" / ablation
    pdir = Path(root) / cfg.run.plots_dir / "ablations" / ablation
    out = []
    for variant, diff in spec.variants.items():
        status, metrics, error = _read_status(mdir / f"{variant}.json")
        try:
            run_info = read_json(mdir / "runs" / f"{variant}.json")
        except json.JSONDecodeError:
            run_info = None
        plain = OmegaConf.to_container(diff) if isinstance(diff, DictConfig) else dict(diff or {})
        out.append(VariantResult(ablation, str(variant), status, metrics, error, run_info,
                                 read_csv(pdir / f"{variant}.csv"), plain, variant_config(cfg, diff)))
    return out


def flat_diff(diff: Any, prefix: str = "") -> dict[str, Any]:
    """``{"simcse": {"train": {"temperature": 0.1}}}`` -> ``{"simcse.train.temperature": 0.1}``."""
    if not isinstance(diff, dict) or not diff:
        return {prefix: diff} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in diff.items():
        out.update(flat_diff(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def pick(results: Sequence[VariantResult], pred: Callable[[VariantResult], bool]) -> VariantResult | None:
    return next((r for r in results if pred(r)), None)


def ctx_of(r: VariantResult) -> int:
    return int(r.config.longlora.train.context_length)


def curve_points(r: VariantResult | None, x: str, y: str) -> tuple[list[float], list[float]]:
    """(xs, ys) of a variant's curve where both cells are filled (an ``ok`` variant only)."""
    if r is None or r.status != "ok":
        return [], []
    pts = [(float(row[x]), float(row[y])) for row in r.curve
           if row.get(x) not in (None, "") and row.get(y) not in (None, "")]
    return [p[0] for p in pts], [p[1] for p in pts]


def ppl_lengths(r: VariantResult) -> set[int]:
    return {int(k.split("@", 1)[1]) for k in r.metrics if k.startswith("ppl@") and r.value(k) is not None}
