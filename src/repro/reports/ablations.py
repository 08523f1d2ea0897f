"""reports/ablations.md: every ablation variant beside the paper's table, and the claims the sweep tests.

An ablation is ``ablations.<name>`` in the config: ``ref`` (the paper table or figure), ``kind``
(``longlora`` | ``longlora_steps`` | ``simcse``), ``paper_table`` (a SimCSE key of
``paper_numbers.yaml`` or null) and ``variants`` (name -> config diff merged over the root config).
Each variant wrote ``metrics/ablations/<name>/<variant>.json`` (``status`` ``ok`` or ``failed``), its
W&B run info under ``runs/`` and, where it logs curves, ``plots/ablations/<name>/<variant>.csv``.
A variant of the config without a metrics file is *missing*; missing and failed variants stay in
every table and turn the claims that need them into "missing".

The paper row beside a SimCSE variant is found from the variant's effective config values (dropout
and fixed mask for Table 3, temperature for Table D.1, pooler + ``mlp_only_train`` for Table 6, the
hard-negative weight ``log alpha`` for Table 7), never from the variant's name. Claims identify
their variants the same way (e.g. "the variant trained with full attention").
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repro.evaluation.references import get_claim, get_table, load_paper_numbers
from repro.reports.ablation_rows import _same, paper_value, simcse_settings  # noqa: F401  (re-exported)
from repro.reporting import (
    MISSING, fmt, hardware, line_figure, md_cell, md_table, read_csv, read_json, save_figure, trajectory_figure, verdict,
)
from repro.tracking import run_link

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


def _diff_text(diff: dict[str, Any]) -> str:
    items = flat_diff(diff)
    return ", ".join(f"`{k.split('.', 1)[-1]}={v}`" for k, v in items.items()) if items else "(base config)"


# --- helpers shared by the page and the claim checks ------------------------------------------


def _pick(results: Sequence[VariantResult], pred: Callable[[VariantResult], bool]) -> VariantResult | None:
    return next((r for r in results if pred(r)), None)


def _ctx(r: VariantResult) -> int:
    return int(r.config.longlora.train.context_length)


def curve_points(r: VariantResult | None, x: str, y: str) -> tuple[list[float], list[float]]:
    """(xs, ys) of a variant's curve where both cells are filled (an ``ok`` variant only)."""
    if r is None or r.status != "ok":
        return [], []
    pts = [(float(row[x]), float(row[y])) for row in r.curve if row.get(x) not in (None, "") and row.get(y) not in (None, "")]
    return [p[0] for p in pts], [p[1] for p in pts]


def _ppl_lengths(r: VariantResult) -> set[int]:
    return {int(k.split("@", 1)[1]) for k in r.metrics if k.startswith("ppl@") and r.value(k) is not None}


def claims(ablation: str, results: Sequence[VariantResult], spec: DictConfig) -> list[list[str]]:
    """Rows ``[claim, evidence, verdict]`` for an ablation ([] when it has no claim check).

    The checks live in :mod:`repro.reports.ablation_claims`.
    """
    from repro.reports.ablation_claims import CLAIMS  # noqa: PLC0415  (that module imports this one)

    fn = CLAIMS.get(ablation)
    return fn(results, spec) if fn else []


# --- the page ---------------------------------------------------------------------------------------


def _longlora_table(res: Sequence[VariantResult]) -> str:
    lengths = sorted(set().union(*(_ppl_lengths(r) for r in res))) or sorted({_ctx(r) for r in res})
    own = any(r.value(f"ppl_own@{_ctx(r)}") is not None for r in res)
    header = ["variant", "config diff", "status", "train ctx", *[f"ppl@{n} (full attn)" for n in lengths],
              *(["ppl@ctx (own pattern)"] if own else []), "passkey@ctx", "trainable params", "tokens/s",
              "peak mem (MB)", "final loss", "W&B"]
    rows = []
    for r in res:
        c, tp = _ctx(r), r.value("train/trainable_params")
        rows.append([r.variant, _diff_text(r.diff), r.status_text, c, *[fmt(r.value(f"ppl@{n}")) for n in lengths],
                     *([fmt(r.value(f"ppl_own@{c}"))] if own else []), fmt(r.value(f"passkey@{c}")),
                     fmt(int(tp)) if tp is not None else MISSING, fmt(r.value("train/tokens_per_s"), 0),
                     fmt(r.value("train/peak_mem_mb"), 0), fmt(r.value("train/final_loss"), 3), run_link(r.run_info)])
    return md_table(header, rows)


def _longlora_paper_note(spec: DictConfig, res: Sequence[VariantResult]) -> str:
    if spec.kind == "longlora_steps":
        claim = get_claim("longlora", "finetune_steps_step0")
        paper = claim["values"]["step0_perplexity_s2"]
        rows = [[r.variant, fmt(curve_points(r, "step", "ppl")[1][0] if curve_points(r, "step", "ppl")[1] else None),
                 fmt(r.value(f"step0/ppl_s2@{_ctx(r)}")), fmt(paper)] for r in res]
        return (f"Step 0 (Position Interpolation, no fine-tuning) beside the paper ({claim['ref']}, {claim['provenance']}"
                f" source: {md_cell(claim['statement'])}):\n\n"
                + md_table(["variant", "step-0 ppl (full attn)", "step-0 ppl (S2-Attn)", "paper step 0 (S2-Attn)"], rows))
    beside = _longlora_beside(spec, res)
    if beside:
        return beside
    gone = [m for m in load_paper_numbers()["longlora"].get("missing") or []
            if isinstance(m, dict) and any(part.strip() in str(spec.ref) for part in str(m.get("ref", "")).split("/"))]
    why = "; ".join(f"{m['ref']}: {m.get('reason', '')}" for m in gone) or "see `missing` in paper_numbers.yaml"
    return f"The paper's numbers for this ablation are not transcribed ({why}); the claims below test orderings only."


def _longlora_beside(spec: DictConfig, res: Sequence[VariantResult]) -> str | None:
    """Table 2 / Table 6 rows transcribed in paper_numbers.yaml beside the variant with the same setting."""
    ad, att = (lambda r: r.config.longlora.adapter), (lambda r: r.config.longlora.attention)  # noqa: E731
    ours = lambda v, key: fmt(v.value(f"{key}@{_ctx(v)}") if v else None)  # noqa: E731
    if "Table 2" in str(spec.ref):
        table = get_table("longlora", "table2_lora_plus")
        match = {"full_ft": lambda r: ad(r).mode == "full", "lora": lambda r: ad(r).mode == "lora" and ad(r).r == 8,
                 "lora_plus": lambda r: ad(r).mode == "lora_plus" and sorted(ad(r).trainable_extra) == ["embed", "norm"]}
        picked = [(row, _pick(res, match[row["method"]])) for row in table["rows"]]
        rows = [[row["label"], fmt(row["values"][0]), _name_of(v), ours(v, "ppl")] for row, v in picked]
        header = ["paper row", "paper (PG19 val.)", "our variant", "ours (full attn)"]
    elif "Table 6" in str(spec.ref):
        table = get_table("longlora", "table6_attention_patterns")
        v = _pick(res, lambda r: att(r).pattern == "s2" and att(r).shift == "heads" and not att(r).wrap)
        row = table["rows"][0]
        rows = [[row["label"], *map(fmt, row["values"]), _name_of(v), ours(v, "ppl_own"), ours(v, "ppl")]]
        header = ["paper row", "paper (tested S2)", "paper (tested full)", "our variant", "ours (tested S2)",
                  "ours (tested full)"]
    else:
        return None
    return (f"{table['ref']} ({table['provenance_label']}; Llama2 7B at 32768, so only orderings compare):\n\n"
            + md_table(header, rows) + "\n\nOther rows are not transcribed (see `missing` in paper_numbers.yaml).")


def _name_of(v: VariantResult | None) -> str:
    return v.variant if v is not None else MISSING


def _mean_std(r: VariantResult, key: str) -> str:
    """``mean ± std (n seeds)`` where the variant ran several seeds, else the single value."""
    mean, std, seeds = r.value(key), r.value(f"{key}/std"), r.metrics.get("seeds") or []
    if mean is None or std is None or len(seeds) < 2:
        return fmt(mean)
    return f"{fmt(mean)} ± {fmt(std)} (n={len(seeds)})"


def _simcse_table(res: Sequence[VariantResult], spec: DictConfig) -> str:
    table, run = spec.get("paper_table"), spec.get("run", "unsup")
    header = ["variant", "config diff", "status", "STS-B dev (best; mean ± std over seeds)",
              *(["paper row", "paper", "Δ (ours − paper)"] if table else []),
              "STS avg", "STS-B test", "SICK-R test", "align", "uniform", "W&B"]
    rows = []
    for r in res:
        ours, cells = r.value(DEV), []
        if table:
            match = paper_value(str(table), r.config, run)
            ref, val = match if match is not None else (f"no matching row of {table}", None)
            cells = [ref, fmt(val, 1), fmt(ours - val) if ours is not None and val is not None else MISSING]
        rows.append([r.variant, _diff_text(r.diff), r.status_text, _mean_std(r, DEV), *cells, fmt(r.value("sts/avg")),
                     fmt(r.value("sts/stsb/test")), fmt(r.value("sts/sickr/test")), fmt(r.value("stsb_test/align"), 3),
                     fmt(r.value("stsb_test/uniform"), 3), run_link(r.run_info)])
    return md_table(header, rows)


def _figures(name: str, spec: DictConfig, res: Sequence[VariantResult], out_dir: Path) -> list[str]:
    """Figures of one ablation (paths relative to the page); none drawn without data."""
    figs, run, fig_dir = [], spec.get("run", "unsup"), out_dir / "figures"
    if spec.kind == "longlora_steps":
        series = {r.variant: curve_points(r, "step", "ppl") for r in res if curve_points(r, "step", "ppl")[0]}
        if series:
            fig = line_figure(series, "fine-tuning step", "perplexity (full attention, training context)",
                              "Perplexity vs fine-tuning steps (LongLoRA Fig. 5)")
            figs.append(save_figure(fig, fig_dir / f"ablation_{name}_ppl_vs_step.png"))
    if spec.get("kind") != "simcse" or spec.get("paper_table") not in ("table3_dropout", "tableD1_temperature"):
        return figs
    s = {r.variant: simcse_settings(r.config, run) for r in res}
    if spec.paper_table == "table3_dropout":
        picks = (("SimCSE (p=0.1)", lambda v: not s[v]["fixed"] and _same(s[v]["p"], 0.1)),
                 ("no dropout (p=0)", lambda v: not s[v]["fixed"] and s[v]["p"] == 0.0),
                 ("fixed 0.1 (same mask)", lambda v: s[v]["fixed"] and _same(s[v]["p"], 0.1)))
        series = {label: curve_points(_pick(res, lambda r, f=f: f(r.variant)), "uniform", "align") for label, f in picks}
        series = {k: v for k, v in series.items() if v[0]}
        if series:
            fig = trajectory_figure(series, "uniformity (ℓ_uniform)", "alignment (ℓ_align)",
                                    "Alignment vs uniformity during training (SimCSE Fig. 2)")
            figs.append(save_figure(fig, fig_dir / f"ablation_{name}_align_uniform.png"))
    param, label, logx = ("p", "dropout p", False) if spec.paper_table == "table3_dropout" else ("tau", "temperature τ", True)
    pool = sorted((r for r in res if not s[r.variant]["fixed"]), key=lambda r: s[r.variant][param])
    ours = [(s[r.variant][param], r.value(DEV)) for r in pool if r.value(DEV) is not None]
    paper = [(s[r.variant][param], m[1]) for r in pool
             if (m := paper_value(str(spec.paper_table), r.config, run)) is not None and m[1] is not None]
    series = {k: ([p[0] for p in v], [p[1] for p in v]) for k, v in
              {f"ours ({res[0].config.run.profile})": ours, "paper (BERT-base)": paper}.items() if v} if res else {}
    if ours:
        fig = line_figure(series, label, "STS-B dev Spearman ×100", f"STS-B dev vs {label}", logx=logx)
        figs.append(save_figure(fig, fig_dir / f"ablation_{name}_dev_vs_{param}.png"))
    return figs


def _scale_note(cfg: DictConfig, kind: str) -> str:
    if kind == "simcse":
        what = f"SimCSE encoder `{cfg.simcse.encoder.source}` on `{cfg.simcse.data.source}` data, {cfg.simcse.train.max_steps} steps"
    else:
        what = (f"LongLoRA model `{cfg.longlora.model.source}`, {cfg.longlora.train.max_steps} steps at context"
                f" {cfg.longlora.train.context_length}")
    return (f"> Scale: profile **{cfg.run.profile}** ({what}). The paper's values are for its models and data; at"
            " this scale they are orientation, and the claims test the orderings the paper reports.")


def section(cfg: DictConfig, root: Path, out_dir: Path, name: str, hw: str) -> list[str]:
    """The Markdown lines of one ablation: variants, the paper beside them, claims, figures."""
    spec = ablation_spec(cfg, name)
    res = collect(root, cfg, name)
    n = {s: sum(r.status == s for r in res) for s in STATUSES}
    lines = ["", f"## {name}", "", f"Reproduces: {spec.get('ref', MISSING)}. Kind `{spec.kind}`. Profile"
             f" **{cfg.run.profile}** on {hw}. Variants: {n['ok']} ok, {n['failed']} failed, {n['missing']} missing"
             f" of {len(res)}.", "", _scale_note(cfg, spec.kind), ""]
    if spec.kind == "simcse":
        lines += [_simcse_table(res, spec), "", "STS-B dev: best Spearman ×100 during training (the paper's ablation"
                  " metric); STS avg / test: the 7-task 'all' setting; align/uniform on STS-B test."]
    else:
        lines += [_longlora_table(res), "", _longlora_paper_note(spec, res)]
    rows = claims(name, res, spec)
    lines += ["", f"### Claims checked at the {cfg.run.profile} scale", "",
              md_table(["claim (paper)", "our evidence", "verdict"], [[md_cell(c) for c in r] for r in rows])
              if rows else "No claim check is defined for this ablation."]
    figs = _figures(name, spec, res, out_dir)
    lines += ["", *[f"![{Path(f).stem}]({f})" for f in figs]] if figs else []
    return lines


def build(cfg: DictConfig, root: Path, out_dir: Path) -> str:
    """The ablations page as Markdown (figures saved under ``out_dir/figures``)."""
    names, hw = ablation_names(cfg), hardware()
    lines = ["# Ablations", "", "Each variant is a config diff over the root config, trained and evaluated on its own."
             " A variant without metrics is listed as missing and a failed one with its error; none is dropped, and a"
             " claim that needs one reads 'missing'."]
    for name in names:
        lines += section(cfg, Path(root), Path(out_dir), name, hw)
    if not names:
        lines += ["", "No ablations in the config (`ablations`)."]
    return "\n".join(lines)
