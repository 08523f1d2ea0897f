"""Positive controls: runs showing that the setup at hand can exhibit the effect a claim is about.

A claim's verdict stands on its control (:func:`repro.reporting.controlled_verdict`): when the control
fails, the setup could not have shown the effect either way, and the verdict is "inconclusive at this
scale" with the control's reason, never "not held".

* **Long-context use** (LongLoRA's central claim, Tables 3-4: perplexity falls as the evaluation context
  grows up to the training context). The control is full-attention *full* fine-tuning at the target
  context -- the method LongLoRA approximates (Table 2's "Full FT" row, Table 6's full-attention row) --
  in the ablation :data:`LONGLORA_CONTROL`: its perplexity at the training context must lie below its
  perplexity at the original (pretraining) context. Every LongLoRA claim about extending the context
  stands on it: if even full attention gains nothing from the longer context, no comparison of
  approximations to it can say anything.
* **Passkey retrieval** (Figure 4): the same control model must retrieve the key (accuracy >=
  :data:`PASSKEY_CONTROL_MIN`) at every test point within its training context.
* **Independent evaluation data** for supervised SimCSE: the STS sets must not be drawn from the
  generator that produced the NLI training triplets (the tiny profile's synthetic sets share one
  grammar, so "supervised beats unsupervised" would be built into the data).

The per-ablation SimCSE controls (dropout noise helps at all, embeddings not collapsed, a seed spread
that resolves the claimed difference) are computed where the claims are, from the same variants
(:mod:`repro.reports.ablation_claims`).
"""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path

from omegaconf import DictConfig

from repro.reporting import Control, fmt
from repro.reports.results import VariantResult, ablation_names, collect, ctx_of, pick

LONGLORA_CONTROL = "longlora_control"  # the ablation holding the full-attention full fine-tuning control
PASSKEY_CONTROL_MIN = 0.9


def _is_control(r: VariantResult) -> bool:
    ll = r.config.longlora
    return ll.attention.pattern == "full" and ll.adapter.mode == "full"


class Controls:
    """The positive controls of one pipeline run, read from its metrics files.

    Args:
        cfg: the composed root config.
        root: the folder holding ``metrics/`` (the repository root).
    """

    def __init__(self, cfg: DictConfig, root: Path) -> None:
        self.cfg, self.root = cfg, Path(root)

    @cached_property
    def longlora_model(self) -> VariantResult | None:
        """The full-attention full fine-tuning variant of :data:`LONGLORA_CONTROL` (None if not configured)."""
        if LONGLORA_CONTROL not in ablation_names(self.cfg):
            return None
        return pick(collect(self.root, self.cfg, LONGLORA_CONTROL), _is_control)

    def _control_ppl(self) -> tuple[VariantResult | None, int, float | None, float | None]:
        r = self.longlora_model
        original = int(self.cfg.longlora.model.get("original_context") or 0)
        if r is None or not original:
            return None, original, None, None
        return r, original, r.value(f"ppl@{original}"), r.value(f"ppl@{ctx_of(r)}")

    def context_use(self) -> Control:
        """Full-attention full fine-tuning has lower perplexity at its training context than at the original one."""
        r, original, short, long = self._control_ppl()
        if r is None or short is None or long is None:
            why = (f"no {LONGLORA_CONTROL} ablation in the config" if r is None
                   else f"{r.variant}: {r.status_text}, ppl@{original} {fmt(short)}, ppl@{ctx_of(r)} {fmt(long)}")
            return Control(None, f"full-attention full fine-tuning: {why}")
        evidence = (f"{r.variant} (full attention, full fine-tuning): ppl {fmt(short)} @{original} → "
                    f"{fmt(long)} @{ctx_of(r)}")
        return Control(long < short, evidence,
                       "even full-attention full fine-tuning does not use the longer context here (its perplexity "
                       "does not fall from the original to the training context)")

    def adaptation(self, base_short: float | None, base_long: float | None) -> Control:
        """Full-attention full fine-tuning lowers the loss at the training context more than at the original one.

        ``base_short`` / ``base_long``: the base with PI and no fine-tuning at the original and training context.
        """
        r, original, short, long = self._control_ppl()
        gain = loss_gains(base_short, base_long, short, long)
        if r is None or gain is None:
            return Control(None, "full-attention full fine-tuning: missing")
        g_short, g_long = gain
        return Control(g_long > g_short, f"{r.variant}: loss gain over step 0 {g_short:.3f} nats @{original}, "
                                         f"{g_long:.3f} @{ctx_of(r)}",
                       "even full-attention full fine-tuning gains no more at the training context than inside the "
                       "original one")

    def passkey(self) -> Control:
        """The control model retrieves the key at every test point within its training context."""
        r = self.longlora_model
        if r is None:
            return Control(None, f"full-attention full fine-tuning: no {LONGLORA_CONTROL} ablation in the config")
        # points within the training context whose prompts fit it (passkey_tokens: the mean prompt length)
        def fits(p: int) -> bool:
            tokens = r.value(f"passkey_tokens@{p}")
            return p <= ctx_of(r) and (tokens is None or tokens <= ctx_of(r))

        points = sorted((int(k.split("@", 1)[1]), r.value(k)) for k in r.metrics
                        if k.startswith("passkey@") and r.value(k) is not None and fits(int(k.split("@", 1)[1])))
        if not points:
            return Control(None, f"{r.variant}: no passkey points recorded within the context ({r.status_text})")
        worst = min(v for _, v in points)
        return Control(worst >= PASSKEY_CONTROL_MIN,
                       f"{r.variant}: passkey accuracy {fmt(worst)} at worst over {len(points)} points up to "
                       f"{points[-1][0]} (needs ≥ {PASSKEY_CONTROL_MIN:g})",
                       "even the full-attention full fine-tuning control does not retrieve the key within its "
                       "training context")

    def independent_sts(self) -> Control:
        """The STS evaluation data are not drawn from the generator of the NLI training data."""
        source = str(self.cfg.simcse.data.get("source", "synthetic"))
        if source == "synthetic":
            return Control(False, "STS and NLI data: both synthetic, from one grammar",
                           "the synthetic STS pairs share the NLI generator's grammar, so supervised training on NLI "
                           "fits the test distribution itself")
        return Control(True, f"STS and NLI data: `{source}` source, real test sets")


def loss_gains(b_short: float | None, b_long: float | None, f_short: float | None,
               f_long: float | None) -> tuple[float, float] | None:
    """Loss reductions ``ln(ppl_base / ppl_finetuned)`` in nats at the original and at the training context."""
    if None in (b_short, b_long, f_short, f_long):
        return None
    return math.log(b_short / f_short), math.log(b_long / f_long)
