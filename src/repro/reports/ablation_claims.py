"""The claim checks of reports/ablations.md: for each ablation, the paper's orderings tested on our variants.

Each check takes the ablation's :class:`~repro.reports.ablations.VariantResult` list and its spec and
returns rows ``[claim, evidence, verdict]``. Variants are identified by their effective config values
(e.g. "the variant trained with full attention"), never by name; a missing or failed input makes the
verdict "missing".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import MappingProxyType

from omegaconf import DictConfig

from repro.reporting import MISSING, fmt, verdict
from repro.reports.ablation_rows import _same, paper_value, simcse_settings
from repro.reports.ablations import DEV, FAR_WORSE_POINTS, VariantResult, _ctx, _pick, _ppl_lengths, curve_points


def _ppl(r: VariantResult | None) -> float | None:
    return r.value(f"ppl@{_ctx(r)}") if r is not None else None


def _name(r: VariantResult | None) -> str:
    return r.variant if r is not None else "(no such variant in the config)"


def _both(a: float | None, b: float | None, test: Callable[[float, float], bool]) -> bool | None:
    return None if a is None or b is None else test(a, b)


def _best_claim(text: str, pool: Sequence[VariantResult], winner: VariantResult | None, key: str = DEV) -> list[str]:
    """Held when the winner's mean beats every other variant's; with seeds, only beyond the spread
    (winner's mean − std above each other's mean + std), as seed variance is 1–3 points at these scales."""
    vals = {r.variant: r.value(key) for r in pool}
    stds = {r.variant: r.value(f"{key}/std") or 0.0 for r in pool}
    complete = winner is not None and pool and all(v is not None for v in vals.values())
    held = None
    if complete:
        w = winner.variant
        held = all(vals[w] - stds[w] > vals[k] + stds[k] for k in vals if k != w) if any(stds.values()) \
            else vals[w] >= max(vals.values())
    best = max(vals, key=lambda k: vals[k]) if complete else None
    spread = lambda k: f" ± {fmt(stds[k])}" if stds[k] else ""  # noqa: E731
    evidence = ", ".join(f"{k} {fmt(v)}{spread(k)}" for k, v in vals.items()) + (f" → best {best}" if best else "")
    rule = " (beyond the seed spread)" if any(stds.values()) else ""
    return [text, f"{_name(winner)} vs the rest{rule}: {evidence}", verdict(held)]


def _longlora_attention(res: Sequence[VariantResult], spec: DictConfig) -> list[list[str]]:
    att = lambda r: r.config.longlora.attention  # noqa: E731
    full = _pick(res, lambda r: att(r).pattern == "full")
    s2 = _pick(res, lambda r: att(r).pattern == "s2" and att(r).shift == "heads" and not att(r).wrap)
    short = _pick(res, lambda r: att(r).pattern == "s2" and att(r).shift == "none")
    all_ = _pick(res, lambda r: att(r).pattern == "s2" and att(r).shift == "all")
    a, f, s, o = _ppl(s2), _ppl(full), _ppl(short), _ppl(all_)
    rel = f" ({(a - f) / f:+.1%})" if a is not None and f is not None else ""
    return [["S2-Attn training, tested with full attention, is within 5% of full-attention training (Table 6, §3.2)",
             f"{_name(s2)} {fmt(a)} vs {_name(full)} {fmt(f)}{rel}", verdict(_both(a, f, lambda x, y: abs(x - y) <= 0.05 * y))],
            ["Short attention without shift is worse than S2-Attn under full-attention testing (Table 6)",
             f"{_name(short)} {fmt(s)} vs {_name(s2)} {fmt(a)}", verdict(_both(s, a, lambda x, y: x > y))],
            ["Only pattern 2 (every head shifted) is worse than S2-Attn under full-attention testing (Table 6)",
             f"{_name(all_)} {fmt(o)} vs {_name(s2)} {fmt(a)}", verdict(_both(o, a, lambda x, y: x > y))]]


def _lora_variants(res: Sequence[VariantResult]) -> tuple[VariantResult | None, VariantResult | None]:
    ad = lambda r: r.config.longlora.adapter  # noqa: E731
    plus = _pick(res, lambda r: ad(r).mode == "lora_plus" and sorted(ad(r).trainable_extra) == ["embed", "norm"])
    full = _pick(res, lambda r: ad(r).mode == "full")
    return plus, full


def _longlora_lora(res: Sequence[VariantResult], spec: DictConfig) -> list[list[str]]:
    plus, full = _lora_variants(res)
    rank = plus.config.longlora.adapter.r if plus is not None else None
    plain = _pick(res, lambda r: r.config.longlora.adapter.mode == "lora" and r.config.longlora.adapter.r == rank)
    p, f, q = _ppl(plus), _ppl(full), _ppl(plain)
    return [["LoRA+ is at most 1% worse than full fine-tuning (Table 2: LoRA+ closes the gap)",
             f"{_name(plus)} {fmt(p)} vs {_name(full)} {fmt(f)}", verdict(_both(p, f, lambda x, y: x <= 1.01 * y))],
            ["Trainable embeddings + norms improve plain LoRA of the same rank (Table 2)",
             f"{_name(plus)} {fmt(p)} vs {_name(plain)} {fmt(q)}", verdict(_both(p, q, lambda x, y: x < y))]]


def _longlora_steps(res: Sequence[VariantResult], spec: DictConfig) -> list[list[str]]:
    curves = {r.variant: curve_points(r, "step", "ppl") for r in res}
    usable = all(len(xs) >= 2 and xs[0] == 0 for xs, _ in curves.values())
    held = all(ys[-1] < ys[0] for _, ys in curves.values()) if usable and curves else None
    ev = "; ".join(f"{k} {fmt(ys[0]) if ys else MISSING} → {fmt(ys[-1]) if ys else MISSING}"
                   f" (step 0 → {int(xs[-1]) if xs else '?'})" for k, (xs, ys) in curves.items())
    plus, full = _lora_variants(res)
    lp, lf = (curves[r.variant][1][-1] if r is not None and curves[r.variant][1] else None for r in (plus, full))
    return [["Perplexity decreases with fine-tuning steps (Figure 5)", ev, verdict(held)],
            ["LoRA+ is within 1% of full fine-tuning at the last step (Figure 5: close after 200 steps)",
             f"{_name(plus)} {fmt(lp)} vs {_name(full)} {fmt(lf)}", verdict(_both(lp, lf, lambda x, y: x <= 1.01 * y))]]


def _longlora_context(res: Sequence[VariantResult], spec: DictConfig) -> list[list[str]]:
    text = "A longer training context lowers perplexity at the longest evaluation length (Tables 3/4)"
    common = set.intersection(*(_ppl_lengths(r) for r in res)) if res else set()
    if not res or any(r.status != "ok" for r in res) or not common:
        return [[text, "inputs: " + ", ".join(f"{r.variant} {r.status}" for r in res), verdict(None)]]
    n = max(common)
    vals = {r.variant: r.value(f"ppl@{n}") for r in res}
    longest = max(res, key=_ctx)
    held = all(vals[longest.variant] < v for k, v in vals.items() if k != longest.variant)
    ev = ", ".join(f"{r.variant} (train {_ctx(r)}) {fmt(vals[r.variant])}" for r in res)
    return [[text, f"ppl@{n} (longest length evaluated for every variant): {ev}", verdict(held)]]


def _dropout(res: Sequence[VariantResult], spec: DictConfig) -> list[list[str]]:
    s = lambda r: simcse_settings(r.config, spec.get("run", "unsup"))  # noqa: E731
    free = [r for r in res if not s(r)["fixed"]]
    p01 = _pick(free, lambda r: _same(s(r)["p"], 0.1))
    fixed = _pick(res, lambda r: s(r)["fixed"] and _same(s(r)["p"], 0.1))
    a, b = (r.value(DEV) if r is not None else None for r in (p01, fixed))
    return [_best_claim("p = 0.1 gives the best STS-B dev among the dropout rates (Table 3)", free, p01),
            [f"A fixed mask at p = 0.1 is far worse than p = 0.1 (Table 3; 'far' = ≥ {FAR_WORSE_POINTS:g} points)",
             f"{_name(fixed)} {fmt(b)} vs {_name(p01)} {fmt(a)}", verdict(_both(a, b, lambda x, y: x - y >= FAR_WORSE_POINTS))]]


def _temperature(res: Sequence[VariantResult], spec: DictConfig) -> list[list[str]]:
    tau = _pick(res, lambda r: _same(simcse_settings(r.config, spec.get("run", "unsup"))["tau"], 0.05))
    return [_best_claim("τ = 0.05 gives the best STS-B dev (Table D.1)", res, tau)]


def _hard_negative(res: Sequence[VariantResult], spec: DictConfig) -> list[list[str]]:
    one = _pick(res, lambda r: _same(simcse_settings(r.config, spec.get("run", "unsup"))["alpha"], 1.0))
    return [_best_claim("α = 1 gives the best STS-B dev (Table 7)", res, one)]


def _pooler(res: Sequence[VariantResult], spec: DictConfig) -> list[list[str]]:
    run = spec.get("run", "unsup")
    vals = {r.variant: r.value(DEV) for r in res}
    paper = {r.variant: paper_value(str(spec.paper_table), r.config, run) if spec.get("paper_table") else None for r in res}
    known = [p[1] for p in paper.values() if p is not None and p[1] is not None]
    if not res or any(v is None for v in vals.values()) or not known:
        return [["Best pooler (Table 6)", "inputs: " + ", ".join(f"{k} {fmt(v)}" for k, v in vals.items()), verdict(None)]]
    best = max(vals, key=lambda k: vals[k])
    top = [p[0] for p in paper.values() if p is not None and p[1] == max(known)]
    held = paper[best] is not None and paper[best][1] == max(known)
    return [[f"Best pooler is the paper's best (Table 6: {' / '.join(top)})",
             f"ours: {best} ({fmt(vals[best])}); " + ", ".join(f"{k} {fmt(v)}" for k, v in vals.items()), verdict(held)]]


def _batch(res: Sequence[VariantResult], spec: DictConfig) -> list[list[str]]:
    vals = {r.variant: r.value(DEV) for r in res}
    done = bool(res) and all(v is not None for v in vals.values())
    spread = max(vals.values()) - min(vals.values()) if done else None
    return [["Insensitive to batch size: STS-B dev spread < 2 points (Appendix A)",
             ", ".join(f"{k} {fmt(v)}" for k, v in vals.items()) + f"; spread {fmt(spread)}",
             verdict(spread < 2.0 if spread is not None else None)]]


CLAIMS = MappingProxyType({
    "longlora_attention": _longlora_attention, "longlora_lora": _longlora_lora, "longlora_steps": _longlora_steps,
    "longlora_context": _longlora_context, "simcse_dropout": _dropout, "simcse_temperature": _temperature,
    "simcse_pooler": _pooler, "simcse_hard_negative": _hard_negative, "simcse_batch": _batch,
})
