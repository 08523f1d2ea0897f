"""reports/simcse.md: the 7-task STS table per run beside SimCSE Table 5."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from repro.evaluation.references import lookup
from repro.reporting import (
    CLAIM_HEADER,
    MISSING,
    claim_row,
    fmt,
    hardware,
    line_figure,
    md_cell,
    md_table,
    read_csv,
    read_json,
    save_figure,
)
from repro.reports.controls import Controls
from repro.simcse_runs import run_train_config
from repro.tracking import run_link

COLUMNS = ["sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr", "avg"]
TRANSFER = ["MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC", "avg"]


def mean_std(metrics: dict[str, Any], key: str) -> str:
    """``"m ± s"`` for an aggregated key (just ``m`` without a ``/std``)."""
    std = metrics.get(f"{key}/std")
    return f"{fmt(metrics.get(key))} ± {fmt(std)}" if std is not None else fmt(metrics.get(key))


def transfer_section(cfg: DictConfig, metrics_dir: Path) -> list[str]:
    """SentEval transfer accuracies per run beside SimCSE Table E.1 (BERT-base rows, no MLM)."""
    sc = cfg.simcse
    capped = sc.transfer.max_examples
    lines = ["", "## Transfer tasks (SentEval, logistic regression on frozen embeddings)", "",
             f"Accuracy ×100; MR/CR/SUBJ/MPQA by {sc.transfer.kfold}-fold cross-validation, SST-2/TREC/MRPC on their"
             " given splits"
             f" (C chosen by {sc.transfer.inner_kfold}-fold inner CV, on dev for SST-2)."
             + (f" **At most {capped} examples per split at this profile: not SentEval's numbers.**" if capped else "")
             + (" **The tasks are synthetic stand-ins in SentEval's file layout** (`repro.data.transfer_synthetic`:"
                " labels from the synthetic grammar's concepts), so the paper's row is shown for the layout only."
                if str(sc.transfer.data_dir) == "synthetic" else "")]
    tasks = [t for t in TRANSFER[:-1] if t in set(sc.transfer.tasks)]  # the tasks that ran, in Table 2's order
    columns = [*tasks, "avg"]
    partial = len(tasks) < len(TRANSFER) - 1
    rows = []
    for run in sc.runs:
        mode = run_train_config(cfg, run).mode
        tm = read_json(metrics_dir / f"transfer_{run}.json") or {}
        rows.append([f"ours `{run}`", *[tm.get(f"transfer/{t}") for t in columns]])
        try:
            ref = lookup("simcse", "tableE1_transfer", setting=mode, model=sc.eval.reference_model, mlm=False)
            paper = dict(zip(TRANSFER, ref["values"], strict=False))
            if partial:  # the paper's average over the same tasks, not over its seven
                paper["avg"] = sum(paper[t] for t in tasks) / len(tasks)
            rows.append([f"paper Table E.1: {mode}-{sc.eval.reference_model}", *[paper.get(t) for t in columns]])
        except (LookupError, KeyError):
            rows.append([f"paper Table E.1 ({mode}): {MISSING}", *[None] * len(columns)])
    lines += ["", md_table(["", *columns], rows)]
    if partial:
        lines += ["", f"avg: the mean over these {len(tasks)} tasks, for ours and for the paper's row alike."]
    if "MRPC" in tasks:
        mrpc = {run: (read_json(metrics_dir / f"transfer_{run}.json") or {}).get("transfer/MRPC_f1") for run in sc.runs}
        lines += ["", "MRPC F1: " + ", ".join(f"`{r}` {fmt(v)}" for r, v in mrpc.items()) + "."]
    return lines


def _ours(metrics: dict[str, Any], agg: str) -> list[Any]:
    out = []
    for col in COLUMNS:
        if col == "avg":
            out.append(metrics.get("sts/avg") if agg == "all" else None)
        elif col in ("stsb", "sickr"):
            out.append(metrics.get(f"sts/{col}/test"))
        else:
            out.append(metrics.get(f"sts/{col}/{agg}"))
    return out


POOLER_LABELS = {"avg": "mean of the last layer", "avg_first_last": "first-last avg.",
                 "cls_before_pooler": "[CLS], no MLP", "cls": "[CLS] with a random MLP", "avg_top2": "top-2 layers avg.",
                 "mean": "mean", "last": "last token"}


def before_section(cfg: DictConfig, metrics_dir: Path) -> list[str]:
    """The encoder SimCSE starts from, scored before any SimCSE training (Table 5's "BERT (first-last avg.)")."""
    sc = cfg.simcse
    pm = read_json(metrics_dir / "pretrained.json") or {}
    init = pm.get("before/init")
    what = {"mlm": f"the tiny BERT after {pm.get('pretrain/steps', MISSING)} steps of masked-language modelling on"
                   f" the training sentences (final MLM loss {fmt(pm.get('pretrain/final_mlm_loss'))}; every SimCSE"
                   " run starts from these weights)",
            "random": "the tiny BERT with random weights (simcse.pretrain.steps = 0)",
            "checkpoint": f"the released checkpoint `{sc.encoder.name_or_path or sc.encoder.package}`"}.get(init, MISSING)
    rows = [[f"before SimCSE: {POOLER_LABELS.get(str(p), p)} (`{p}`)",
             *_ours({k.removeprefix(f"before/{p}/"): v for k, v in pm.items() if k.startswith(f"before/{p}/")}, "all")]
            for p in sc.pretrain.eval_poolers]
    ref_model = str(sc.eval.reference_model).removeprefix("simcse-") + "-first-last-avg"
    try:
        ref = lookup("simcse", "table5_sts_main", setting="unsup", model=ref_model)
        rows.append([f"paper Table 5: {ref['label']}", *ref["values"]])
    except LookupError:
        pass
    return ["", "## The encoder before SimCSE", "", f"Scored with the runs' STS protocol: {what}.", "",
            md_table(["", *COLUMNS], rows)]


def build(cfg: DictConfig, root: Path, out_dir: Path) -> str:
    """The SimCSE page as Markdown (figures saved under ``out_dir/figures``)."""
    sc = cfg.simcse
    metrics_dir, plots_dir = root / cfg.run.metrics_dir / "simcse", root / cfg.run.plots_dir / "simcse"
    lines = ["# SimCSE reproduction", "",
             f"Profile **{cfg.run.profile}** on {hardware()}. Encoder `{sc.encoder.source}`"
             f" `{sc.encoder.name_or_path or sc.encoder.package}`, pooler `{sc.encoder.pooler}`, data `{sc.data.source}`.",
             "", "Spearman ×100 of cosine similarity. STS12–16 in the 'all' setting (subsets concatenated, the paper's"
             " Table 5 setting); 'mean' and 'wmean' (SimCSE Appendix B) shown separately because the protocol moves the"
             " numbers.",
             "", f"Data: {sc.data.note or sc.data.source}. Where a local STS copy has ~20% of its test pairs held out,"
             " our test scores are **not comparable to published full-test numbers**; the paper's rows are shown for"
             " orientation only."]
    lines += before_section(cfg, metrics_dir)
    avgs: dict[str, float | None] = {}
    figures = []
    for run in sc.runs:
        train_cfg = run_train_config(cfg, run)
        ev = read_json(metrics_dir / f"eval_{run}.json") or {}
        tr = read_json(metrics_dir / f"train_{run}.json") or {}
        try:
            ref = lookup("simcse", "table5_sts_main", setting=train_cfg.mode, model=sc.eval.reference_model)
            ref_vals, ref_label = ref["values"], f"paper Table 5: {train_cfg.mode}-{ref['label']}"
        except LookupError:
            ref_vals, ref_label = [None] * len(COLUMNS), f"paper Table 5 ({sc.eval.reference_model}): {MISSING}"
        ours = _ours(ev, "all")
        table_rows = [[f"ours ({cfg.run.profile}), all", *ours], ["ours, mean", *_ours(ev, "mean")],
                      ["ours, wmean", *_ours(ev, "wmean")], [ref_label, *ref_vals]]
        if cfg.run.profile == "paper":  # a difference to the paper means something at its scale only
            table_rows.append(["delta (ours all − paper)", *[o - r if o is not None and r is not None else None
                                                             for o, r in zip(ours, ref_vals, strict=False)]])
        avgs[train_cfg.mode] = ev.get("sts/avg")
        lines += ["", f"## Run `{run}` ({train_cfg.mode}, τ={train_cfg.temperature}, batch {train_cfg.batch_size},"
                  f" {tr.get('train/steps', MISSING)} steps)", "",
                  md_table(["", *COLUMNS], table_rows),
                  "", f"Best STS-B dev during training: {fmt(tr.get('train/best_stsb_dev'))}; alignment"
                  f" {fmt(ev.get('stsb_test/align'), 3)}, uniformity {fmt(ev.get('stsb_test/uniform'), 3)} (STS-B test,"
                  f" pairs with gold > 4). W&B: {run_link(read_json(metrics_dir / 'runs' / f'train_{run}.json'))}."]
        curve = [r for r in read_csv(plots_dir / f"train_{run}.csv") if r.get("stsb_dev_spearman")]
        if curve:
            fig = line_figure({run: ([int(r["step"]) for r in curve], [float(r["stsb_dev_spearman"]) for r in curve])},
                              "step", "STS-B dev Spearman", f"SimCSE {run}: dev curve")
            figures.append(save_figure(fig, out_dir / "figures" / f"simcse_dev_{run}.png"))
    lines += transfer_section(cfg, metrics_dir)
    sup, unsup = avgs.get("sup"), avgs.get("unsup")
    held = sup > unsup if sup is not None and unsup is not None else None
    row = claim_row("Supervised SimCSE beats unsupervised on the STS average (Table 5)",
                    f"sup {fmt(sup)} vs unsup {fmt(unsup)}", held, Controls(cfg, root).independent_sts())
    lines += ["", "## Claims checked at this scale", "",
              "Each claim stands on a positive control; where the control fails, the verdict is 'inconclusive at "
              "this scale' with the reason.", "", md_table(CLAIM_HEADER, [[md_cell(c) for c in row]])]
    lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(lines)
