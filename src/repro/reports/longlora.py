"""reports/longlora.md: perplexity vs length, passkey retrieval and the claims they test."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from repro.evaluation.references import load_paper_numbers
from repro.models.longlora import pi_factor
from repro.reporting import (
    MISSING, fmt, hardware, line_figure, md_table, read_csv, read_json, save_figure, verdict,
)
from repro.tracking import run_link

MODEL_LABELS = {"base_pi": "base + PI, no fine-tuning (step 0)", "finetuned": "LongLoRA fine-tuned"}


def _ppl_tables(rows: list[dict[str, str]], key: str) -> tuple[str, dict]:
    by_set: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        by_set[r["eval_set"]][r["model"]][int(r["length"])] = float(r[key])
    parts = []
    for set_name, models in sorted(by_set.items()):
        lengths = sorted({n for m in models.values() for n in m})
        table_rows = [[MODEL_LABELS.get(m, m), *[vals.get(n) for n in lengths]] for m, vals in sorted(models.items())]
        parts.append(f"**{set_name}**\n\n" + md_table(["model", *[str(n) for n in lengths]], table_rows))
    return "\n\n".join(parts), by_set


def build(cfg: DictConfig, root: Path, out_dir: Path) -> str:
    """The LongLoRA page as Markdown (figures saved under ``out_dir/figures``)."""
    ll = cfg.longlora
    metrics_dir, plots_dir = root / cfg.run.metrics_dir / "longlora", root / cfg.run.plots_dir / "longlora"
    train = read_json(metrics_dir / "train.json") or {}
    ppl_rows = read_csv(plots_dir / "ppl_vs_length.csv")
    passkey_rows = read_csv(plots_dir / "passkey.csv")
    loss_rows = read_csv(plots_dir / "train_loss.csv")
    target, original = int(ll.train.context_length), int(ll.model.original_context)
    lines = [
        "# LongLoRA reproduction",
        "",
        f"Profile **{cfg.run.profile}** on {hardware()}. Model source `{ll.model.source}`"
        f" (original context {original}), extended to **{target}** tokens with Position Interpolation"
        f" (factor {pi_factor(target, original)}), attention `{ll.attention.pattern}`"
        f" (shift `{ll.attention.shift}`, {'roll' if ll.attention.wrap else 'leak-free'}), adapter `{ll.adapter.mode}`,"
        f" {train.get('train/steps', MISSING)} steps. Evaluation uses full attention.",
        "",
        f"Training data: `{ll.data.train.kind}` source. W&B: train {run_link(read_json(metrics_dir / 'runs' / 'train.json'))},"
        f" evaluate {run_link(read_json(metrics_dir / 'runs' / 'evaluate.json'))}.",
    ]
    if cfg.run.profile == "tiny":
        lines += ["", "> Tiny profile: a ~100k-parameter Llama trained from scratch on a synthetic corpus with long-range "
                  "recall, standing in for Llama-2-7B on RedPajama/PG19. The paper's perplexities are not comparable in "
                  "value; only the orderings (claims below) are tested."]
    ppl_md, by_set = _ppl_tables(ppl_rows, "ppl")
    newest_md, _ = _ppl_tables(ppl_rows, "ppl_newest")
    lines += ["", "## Perplexity vs evaluation length (sliding window, stride "
              f"{ll.eval.stride}, every token of each window scored; LongLoRA eval.py)", "", ppl_md or MISSING,
              "", "Variant scoring only the newest stride tokens of each window (Press et al.), reported separately:",
              "", newest_md or MISSING]
    figures = []
    for set_name, models in sorted(by_set.items()):
        series = {MODEL_LABELS.get(m, m): (sorted(v), [v[n] for n in sorted(v)]) for m, v in models.items()}
        fig = line_figure(series, "evaluation length (tokens)", "perplexity", f"Perplexity vs length — {set_name}", logx=True)
        figures.append(save_figure(fig, out_dir / "figures" / f"longlora_ppl_{set_name}.png"))
    acc: dict[str, dict[int, float]] = defaultdict(dict)
    for r in passkey_rows:
        acc[r["model"]][int(r["length"])] = float(r["accuracy"])
    lengths = sorted({n for v in acc.values() for n in v})
    lines += ["", f"## Passkey retrieval ({ll.eval.passkey_trials} seeded trials per length, greedy, exact match)", "",
              md_table(["model", *map(str, lengths)], [[MODEL_LABELS.get(m, m), *[v.get(n) for n in lengths]]
                                                       for m, v in sorted(acc.items())]) if acc else MISSING]
    if acc:
        fig = line_figure({MODEL_LABELS.get(m, m): (sorted(v), [v[n] for n in sorted(v)]) for m, v in acc.items()},
                          "prompt length (tokens)", "accuracy", "Passkey retrieval", logx=True)
        figures.append(save_figure(fig, out_dir / "figures" / "longlora_passkey.png"))
    if loss_rows:
        fig = line_figure({"train loss": ([int(r["step"]) for r in loss_rows], [float(r["loss"]) for r in loss_rows])},
                          "step", "loss", "Fine-tuning loss")
        figures.append(save_figure(fig, out_dir / "figures" / "longlora_train_loss.png"))
    lines += ["", "## Claims checked at this scale", "", md_table(["claim (paper)", "our evidence", "verdict"], _claims(by_set, acc, target))]
    lines += ["", "## Training", "", md_table(["metric", "value"], [[k, v] for k, v in sorted(train.items())])]
    lines += ["", "## The paper's numbers", "", _paper_section()]
    lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(lines)


def _claims(by_set: dict, acc: dict, target: int) -> list[list[Any]]:
    rows = []
    for set_name, models in sorted(by_set.items()):
        ft, base = models.get("finetuned", {}), models.get("base_pi", {})
        shortest = min(ft) if ft else None
        held = ft[target] < base[target] if target in ft and target in base else None
        rows.append([f"Fine-tuning after PI lowers perplexity at the target context (Fig. 5: step 0 is worst) — {set_name}",
                     f"{fmt(base.get(target))} → {fmt(ft.get(target))} at {target}", verdict(held)])
        held = ft[target] < ft[shortest] if ft and target in ft and shortest != target else None
        rows.append([f"A longer evaluation context lowers perplexity up to the training context (Table 3) — {set_name}",
                     f"{fmt(ft.get(shortest))} at {shortest} vs {fmt(ft.get(target))} at {target}", verdict(held)])
    ft_acc, base_acc = acc.get("finetuned", {}), acc.get("base_pi", {})
    held = ft_acc[target] > base_acc[target] if target in ft_acc and target in base_acc else None
    rows.append(["Passkey retrieval at the extended length improves after fine-tuning (Fig. 4)",
                 f"{fmt(base_acc.get(target))} → {fmt(ft_acc.get(target))} at {target}", verdict(held)])
    return rows


def _paper_section() -> str:
    data = load_paper_numbers()["longlora"]
    rows = [[c["ref"], c["statement"], c.get("provenance", "")] for c in data.get("claims", {}).values()]
    text = md_table(["reference", "statement", "provenance"], rows)
    missing = data.get("missing") or []
    if missing:
        text += "\n\nNot yet transcribed from the paper: " + "; ".join(
            m if isinstance(m, str) else m.get("ref", str(m)) for m in missing)
    return text
