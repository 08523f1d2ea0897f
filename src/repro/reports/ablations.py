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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repro.evaluation.references import get_claim, get_table, load_paper_numbers
from repro.reporting import (
    CLAIM_HEADER,
    MISSING,
    fmt,
    hardware,
    line_figure,
    md_cell,
    md_table,
    save_figure,
    trajectory_figure,
)
from repro.reports.ablation_claims import CLAIMS
from repro.reports.ablation_rows import _same, paper_value, simcse_settings
from repro.reports.controls import Controls
from repro.reports.results import (
    DEV,
    STATUSES,
    VariantResult,
    ablation_names,
    ablation_spec,
    collect,
    ctx_of,
    curve_points,
    flat_diff,
    pick,
    ppl_lengths,
)
from repro.tracking import run_link


def _diff_text(diff: dict[str, Any]) -> str:
    items = flat_diff(diff)
    return ", ".join(f"`{k.split('.', 1)[-1]}={v}`" for k, v in items.items()) if items else "(base config)"


def claims(ablation: str, results: Sequence[VariantResult], spec: DictConfig, controls: Controls) -> list[list[str]]:
    """Rows of :data:`~repro.reporting.CLAIM_HEADER` for an ablation ([] when it has no claim check).

    The checks live in :mod:`repro.reports.ablation_claims`; each stands on a positive control
    (:mod:`repro.reports.controls`).
    """
    fn = CLAIMS.get(ablation)
    return fn(results, spec, controls) if fn else []


# --- the page ---------------------------------------------------------------------------------------


def _longlora_table(res: Sequence[VariantResult]) -> str:
    lengths = sorted(set().union(*(ppl_lengths(r) for r in res))) or sorted({ctx_of(r) for r in res})
    own = any(r.value(f"ppl_own@{ctx_of(r)}") is not None for r in res)
    header = ["variant", "config diff", "status", "train ctx", *[f"ppl@{n} (full attn)" for n in lengths],
              *(["ppl@ctx (own pattern)"] if own else []), "passkey@ctx", "trainable params", "tokens/s",
              "peak mem (MB)", "final loss", "W&B"]
    rows = []
    for r in res:
        c, tp = ctx_of(r), r.value("train/trainable_params")
        diff = _diff_text(r.diff)
        if r.status == "ok" and r.metrics.get("shared_with"):  # the pipeline's own run, evaluated again here
            diff += f" (trained once, by `{r.metrics['shared_with']}`)"
        rows.append([r.variant, diff, r.status_text, c, *[fmt(r.value(f"ppl@{n}")) for n in lengths],
                     *([fmt(r.value(f"ppl_own@{c}"))] if own else []), fmt(r.value(f"passkey@{c}")),
                     fmt(int(tp)) if tp is not None else MISSING, fmt(r.value("train/tokens_per_s"), 0),
                     fmt(r.value("train/peak_mem_mb"), 0), fmt(r.value("train/final_loss"), 3), run_link(r.run_info)])
    return md_table(header, rows)


def _longlora_paper_note(spec: DictConfig, res: Sequence[VariantResult]) -> str:
    if spec.kind == "longlora_steps":
        claim = get_claim("longlora", "finetune_steps_step0")
        paper = claim["values"]["step0_perplexity_s2"]
        rows = [[r.variant, fmt(curve_points(r, "step", "ppl")[1][0] if curve_points(r, "step", "ppl")[1] else None),
                 fmt(r.value(f"step0/ppl_s2@{ctx_of(r)}")), fmt(paper)] for r in res]
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
    ad, att = (lambda r: r.config.longlora.adapter), (lambda r: r.config.longlora.attention)
    ours = lambda v, key: fmt(v.value(f"{key}@{ctx_of(v)}") if v else None)  # noqa: E731
    if "Table 2" in str(spec.ref):
        table = get_table("longlora", "table2_lora_plus")
        match = {"full_ft": lambda r: ad(r).mode == "full", "lora": lambda r: ad(r).mode == "lora" and ad(r).r == 8,
                 "lora_plus": lambda r: ad(r).mode == "lora_plus" and sorted(ad(r).trainable_extra) == ["embed", "norm"]}
        picked = [(row, pick(res, match[row["method"]])) for row in table["rows"]]
        rows = [[row["label"], fmt(row["values"][0]), _name_of(v), ours(v, "ppl")] for row, v in picked]
        header = ["paper row", "paper (PG19 val.)", "our variant", "ours (full attn)"]
    elif "Table 6" in str(spec.ref):
        table = get_table("longlora", "table6_attention_patterns")
        v = pick(res, lambda r: att(r).pattern == "s2" and att(r).shift == "heads" and not att(r).wrap)
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
    delta = table and res and res[0].config.run.profile == "paper"  # a difference means something at paper scale only
    header = ["variant", "config diff", "status", "STS-B dev (best; mean ± std over seeds)",
              *(["paper row", "paper"] if table else []), *(["Δ (ours − paper)"] if delta else []),
              "STS avg", "STS-B test", "SICK-R test", "align", "uniform", "W&B"]
    # test sets a variant is scored on: simcse.eval.ablation_tasks (STS-B alone by default, the tables' dev set's)
    keep = [k for k, key in (("STS avg", "sts/avg"), ("SICK-R test", "sts/sickr/test"))
            if not any(r.value(key) is not None for r in res)]
    rows = []
    for r in res:
        ours, cells = r.value(DEV), []
        if table:
            match = paper_value(str(table), r.config, run)
            ref, val = match if match is not None else (f"no matching row of {table}", None)
            cells = [ref, fmt(val, 1)]
            if delta:
                cells.append(fmt(ours - val) if ours is not None and val is not None else MISSING)
        rows.append([r.variant, _diff_text(r.diff), r.status_text, _mean_std(r, DEV), *cells, fmt(r.value("sts/avg")),
                     fmt(r.value("sts/stsb/test")), fmt(r.value("sts/sickr/test")), fmt(r.value("stsb_test/align"), 3),
                     fmt(r.value("stsb_test/uniform"), 3), run_link(r.run_info)])
    drop = [header.index(k) for k in keep]
    return md_table([h for i, h in enumerate(header) if i not in drop],
                    [[c for i, c in enumerate(row) if i not in drop] for row in rows])


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
        series = {label: curve_points(pick(res, lambda r, f=f: f(r.variant)), "uniform", "align") for label, f in picks}
        series = {k: v for k, v in series.items() if v[0]}
        if series:
            fig = trajectory_figure(series, "uniformity (ℓ_uniform)", "alignment (ℓ_align)",
                                    "Alignment vs uniformity during training (SimCSE Fig. 2)")
            figs.append(save_figure(fig, fig_dir / f"ablation_{name}_align_uniform.png"))
    dropout = spec.paper_table == "table3_dropout"
    param, label, logx = ("p", "dropout p", False) if dropout else ("tau", "temperature τ", True)
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
        what = (f"SimCSE encoder `{cfg.simcse.encoder.source}` on `{cfg.simcse.data.source}` data,"
                f" {cfg.simcse.train.max_steps} steps")
    else:
        what = (f"LongLoRA model `{cfg.longlora.model.source}`, {cfg.longlora.train.max_steps} steps at context"
                f" {cfg.longlora.train.context_length}")
    return (f"> Scale: profile **{cfg.run.profile}** ({what}). The paper's values are for its models and data; at"
            " this scale they are orientation, and the claims test the orderings the paper reports, each only where"
            " its positive control shows that this setup can exhibit the effect.")


def section(cfg: DictConfig, root: Path, out_dir: Path, name: str, hw: str, controls: Controls) -> list[str]:
    """The Markdown lines of one ablation: variants, the paper beside them, claims, figures.

    ``controls`` is the run's positive controls, built once for the page (:func:`build`)."""
    spec = ablation_spec(cfg, name)
    res = collect(root, cfg, name)
    if not res:  # a family the grid leaves out (the default grid; conf/ablations/full.yaml has every variant)
        return ["", f"## {name}", "", f"Reproduces: {spec.get('ref', MISSING)}. **Not in this grid** (no variants"
                " configured): the complete grid runs it, `dvc exp run -S ablations=full`."]
    n = {s: sum(r.status == s for r in res) for s in STATUSES}
    lines = ["", f"## {name}", "", f"Reproduces: {spec.get('ref', MISSING)}. Kind `{spec.kind}`. Profile"
             f" **{cfg.run.profile}** on {hw}. Variants: {n['ok']} ok, {n['failed']} failed, {n['missing']} missing"
             f" of {len(res)}.", "", _scale_note(cfg, spec.kind), ""]
    if spec.kind == "simcse":
        tasks = list(OmegaConf.select(cfg, "simcse.eval.ablation_tasks", default=None) or [])
        lines += [_simcse_table(res, spec), "", "STS-B dev: best Spearman ×100 during training (the paper's ablation"
                  f" metric); test sets scored after training (`simcse.eval.ablation_tasks`): {', '.join(tasks)}"
                  " (STS avg: the 7-task 'all' setting, when all seven are scored); align/uniform on STS-B test."]
    else:
        lines += [_longlora_table(res), "", _longlora_paper_note(spec, res)]
    rows = claims(name, res, spec, controls)
    lines += ["", f"### Claims checked at the {cfg.run.profile} scale", "",
              md_table(CLAIM_HEADER, [[md_cell(c) for c in r] for r in rows])
              if rows else "No claim check is defined for this ablation."]
    figs = _figures(name, spec, res, out_dir)
    lines += ["", *[f"![{Path(f).stem}]({f})" for f in figs]] if figs else []
    return lines


def build(cfg: DictConfig, root: Path, out_dir: Path) -> str:
    """The ablations page as Markdown (figures saved under ``out_dir/figures``)."""
    names, hw = ablation_names(cfg), hardware()
    controls = Controls(cfg, Path(root))  # the positive controls, read once for every section
    lines = ["# Ablations", "", "Each variant is a config diff over the root config, trained and evaluated on its own."
             " A variant without metrics is listed as missing and a failed one with its error; none is dropped, and a"
             " claim that needs one reads 'missing'."]
    for name in names:
        lines += section(cfg, Path(root), Path(out_dir), name, hw, controls)
    if not names:
        lines += ["", "No ablations in the config (`ablations`)."]
    return "\n".join(lines)
