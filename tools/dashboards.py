"""W&B reports for the ablation sweeps: one report per ablation, its runs selected by W&B group.

    python -m tools.dashboards [--params params.yaml] [--ablation NAME] [--dry-run]

The runs of an ablation live in project ``<prefix>-longlora`` or ``<prefix>-simcse`` (by the
ablation's kind) and group ``ablation-<name>`` (what the ablation runner sets), named by
:func:`repro.tracking.make_run_name`. Variants are told apart by the config keys their diffs change
(the runset is grouped by them), so the panels show one line or bar per variant: training and eval
curves, and the final metrics as bar charts.

The report is built with ``wandb-workspaces`` (``pip install wandb-workspaces``), imported only when
W&B is online (:func:`repro.tracking.wandb_mode`) and ``--dry-run`` is not given; otherwise the plan
(project, group, panels and metric keys) is printed and nothing is created.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repro.reporting import read_json
from repro.reports.results import ablation_names, ablation_spec, flat_diff
from repro.tracking import project_name, wandb_mode

NOT_IN_WANDB = "written to the metrics JSON/CSV; shown once the runner also logs it to the W&B run"


@dataclass(frozen=True)
class PanelSpec:
    """One panel: ``line`` (history vs step), ``bar`` (final summary values) or ``scatter`` (summary x vs y)."""

    kind: str
    title: str
    metrics: tuple[str, ...]
    x: str | None = None
    note: str = ""


@dataclass(frozen=True)
class DashboardPlan:
    """What :func:`build_report` creates for one ablation."""

    ablation: str
    ref: str
    project: str
    entity: str | None
    group: str
    title: str
    group_by: tuple[str, ...]
    panels: tuple[PanelSpec, ...]
    runs: tuple[tuple[str, str], ...]


def paper_of(kind: str) -> str:
    """The paper (W&B project suffix) of an ablation kind."""
    return "simcse" if kind == "simcse" else "longlora"


def varied_keys(spec: DictConfig) -> tuple[str, ...]:
    """Dotted config keys changed by any variant of the ablation, in first-seen order."""
    keys: dict[str, None] = {}
    for diff in spec.variants.values():
        plain = OmegaConf.to_container(diff) if isinstance(diff, DictConfig) else diff or {}
        keys.update(dict.fromkeys(flat_diff(plain)))
    return tuple(keys)


def panels_for(cfg: DictConfig, spec: DictConfig) -> tuple[PanelSpec, ...]:
    """The panels of an ablation's report, by kind (metric keys as the workflows log them)."""
    if spec.kind == "simcse":
        return (PanelSpec("line", "Training loss", ("train/loss",), "Step"),
                PanelSpec("line", "Learning rate", ("train/lr",), "Step"),
                PanelSpec("line", "STS-B dev Spearman ×100", ("eval/stsb_dev_spearman",), "Step"),
                PanelSpec("line", "Alignment and uniformity (STS-B dev)", ("eval/align", "eval/uniform"), "Step"),
                PanelSpec("scatter", "Alignment vs uniformity, final (SimCSE Fig. 2)", ("eval/align",), "eval/uniform"),
                PanelSpec("bar", "Best STS-B dev", ("train/best_stsb_dev",)),
                PanelSpec("bar", "STS test ('all')", ("sts/avg", "sts/stsb/test", "sts/sickr/test")),
                PanelSpec("bar", "Alignment / uniformity (STS-B test)", ("stsb_test/align", "stsb_test/uniform")))
    target, lengths = int(cfg.longlora.train.context_length), [int(n) for n in cfg.longlora.eval.lengths]
    panels = [PanelSpec("line", "Training loss", ("train/loss",), "Step"),
              PanelSpec("line", "Learning rate", ("train/lr",), "Step"),
              PanelSpec("line", "Throughput (tokens/s)", ("train/tokens_per_s",), "Step"),
              PanelSpec("line", "Peak memory (MB)", ("train/peak_mem_mb",), "Step")]
    if spec.kind == "longlora_steps":
        panels.append(PanelSpec("line", "Perplexity vs fine-tuning step (LongLoRA Fig. 5)", (f"eval/ppl@{target}",),
                                "Step", NOT_IN_WANDB))
    panels += [PanelSpec("bar", "Final training metrics", ("train/final_loss", "train/trainable_params",
                                                           "train/tokens_per_s", "train/peak_mem_mb")),
               PanelSpec("bar", "Perplexity (full attention)", tuple(f"ppl@{n}" for n in lengths), note=NOT_IN_WANDB),
               PanelSpec("bar", "Passkey accuracy", (f"passkey@{target}",), note=NOT_IN_WANDB)]
    return tuple(panels)


def plan_dashboard(cfg: DictConfig, ablation: str, root: Path = Path(".")) -> DashboardPlan:
    """The report for one ablation; run names are read from the recorded runs where they exist."""
    spec = ablation_spec(cfg, ablation)
    runs_dir = Path(root) / cfg.run.metrics_dir / "ablations" / ablation / "runs"
    runs = []
    for variant in spec.variants:
        info = read_json(runs_dir / f"{variant}.json")
        runs.append((str(variant), str(info.get("name")) if info else "not run yet"))
    return DashboardPlan(
        ablation=ablation, ref=str(spec.get("ref", "")), project=project_name(cfg, paper_of(spec.kind)),
        entity=cfg.wandb.get("entity") or None, group=f"ablation-{ablation}",
        title=f"Ablation {ablation} ({cfg.run.profile})"[:128], group_by=varied_keys(spec),
        panels=panels_for(cfg, spec), runs=tuple(runs))


def format_plan(plan: DashboardPlan) -> str:
    """The plan as text, one panel per line with its metric keys."""
    lines = [f"[{plan.ablation}] report {plan.title!r}",
             f"  project: {plan.project}   entity: {plan.entity or '(default entity)'}   group: {plan.group}",
             f"  reproduces: {plan.ref}",
             f"  runs grouped by config: {', '.join(plan.group_by) or '(none: one run per variant)'}",
             "  variants -> recorded run: " + ", ".join(f"{v} -> {n}" for v, n in plan.runs), "  panels:"]
    for p in plan.panels:
        axis = f" vs {p.x}" if p.x else ""
        lines.append(f"    - {p.kind:7s} {p.title}: {', '.join(p.metrics)}{axis}" + (f"  ({p.note})" if p.note else ""))
    return "\n".join(lines)


def build_report(plan: DashboardPlan, wr: Any) -> str:
    """Create and save the W&B report of ``plan`` with the ``wandb_workspaces.reports.v2`` module ``wr``.

    Returns:
        The report's URL.
    """
    where = {"entity": plan.entity} if plan.entity else {}
    runset = wr.Runset(project=plan.project, name=plan.group, filters=f"Group = '{plan.group}'",
                       groupby=[f"config.{k}" for k in plan.group_by], **where)
    panels = []
    for p in plan.panels:
        if p.kind == "line":
            panels.append(wr.LinePlot(title=p.title, x=p.x or "Step", y=list(p.metrics)))
        elif p.kind == "bar":
            panels.append(wr.BarPlot(title=p.title, metrics=list(p.metrics), orientation="v"))
        elif p.kind == "scatter":
            panels.append(wr.ScatterPlot(title=p.title, x=p.x, y=p.metrics[0]))
        else:
            raise ValueError(f"panel {p.title!r}: unknown kind {p.kind!r} (line, bar, scatter)")
    report = wr.Report(project=plan.project, title=plan.title, description=f"Reproduces {plan.ref}",
                       blocks=[wr.P(f"Runs of W&B group {plan.group}, grouped by {', '.join(plan.group_by) or 'run'}."),
                               wr.PanelGrid(runsets=[runset], panels=panels)], **where)
    report.save()
    return str(getattr(report, "url", "") or plan.title)


def _enable_hint() -> str:
    return ("To build these reports: pip install wandb-workspaces; log in (wandb login, or WANDB_API_KEY), upload"
            " offline runs (wandb sync wandb/offline-run-*), then run python -m tools.dashboards without --dry-run.")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the plan (offline or ``--dry-run``) or build the reports (online)."""
    parser = argparse.ArgumentParser(prog="python -m tools.dashboards", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="composed config (default: params.yaml)")
    parser.add_argument("--ablation", help="one ablation (default: all of them)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be built; create nothing")
    parser.add_argument("--root", default=".", help="where metrics/ lives (for recorded run names)")
    args = parser.parse_args(argv)
    params = Path(args.params)
    if not params.is_file():
        raise SystemExit(f"params file not found: {params}")
    cfg = OmegaConf.load(params)
    names = ablation_names(cfg)
    if args.ablation:
        if args.ablation not in names:
            raise SystemExit(f"unknown ablation {args.ablation!r} in {params}; ablations: {names}")
        names = [args.ablation]
    if not names:
        raise SystemExit(f"no ablations in {params} (key 'ablations')")
    plans = [plan_dashboard(cfg, name, Path(args.root)) for name in names]
    mode = wandb_mode()
    if args.dry_run or mode != "online":
        why = "--dry-run" if args.dry_run else f"W&B mode is {mode!r}"
        print(f"Dry run ({why}): nothing is created. These W&B reports would be built:\n")
        print("\n\n".join(format_plan(p) for p in plans))
        print("\n" + _enable_hint())
        return 0
    try:
        wr = importlib.import_module("wandb_workspaces.reports.v2")
    except ImportError:
        print("\n\n".join(format_plan(p) for p in plans))
        print("\nwandb-workspaces is not installed, so no report was built. " + _enable_hint(), file=sys.stderr)
        return 1
    for plan in plans:
        print(f"{plan.ablation}: {build_report(plan, wr)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
