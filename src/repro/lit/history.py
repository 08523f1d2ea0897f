"""A Lightning callback that keeps the logged training curve and survives checkpoint resume."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback


class HistoryRecorder(Callback):
    """One row per optimizer step of the chosen logged metrics (``train/loss`` → column ``loss``).

    ``eval_keys`` (e.g. ``eval/stsb_dev_spearman``) go on the row of the step whose validation logged them,
    and on no other: Lightning keeps a metric in ``callback_metrics`` until it is logged again, and a resumed
    run starts without it, so a value carried forward would make a resumed curve differ from an uninterrupted
    one. The rows are part of the checkpoint (``state_dict``), so a resumed run writes the whole curve; list
    this callback before any that saves a checkpoint in ``on_train_batch_end``, so that the step's row is in it.
    """

    def __init__(self, keys: tuple[str, ...], eval_keys: tuple[str, ...] = ()):
        self.keys, self.eval_keys = keys, eval_keys
        self.rows: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == 0 or (self.rows and self.rows[-1]["step"] == step):
            return  # mid-accumulation micro-batch: the optimizer step was already recorded
        metrics = trainer.callback_metrics
        row: dict[str, float] = {"step": step}
        for key in self.keys:
            if key in metrics:
                row[key.split("/")[-1]] = float(metrics[key])
        self.rows.append(row)

    def on_validation_end(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if trainer.sanity_checking or not self.eval_keys or not self.rows or self.rows[-1]["step"] != step:
            return
        metrics = trainer.callback_metrics
        self.rows[-1].update({key.split("/")[-1]: float(metrics[key]) for key in self.eval_keys if key in metrics})

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))


class PeriodicPerplexity(Callback):
    """Full-attention perplexity at one length every ``every`` optimizer steps (LongLoRA Figure 5).

    The model is switched to full attention for the evaluation and back to its training pattern
    afterwards; rows ``{"step", "ppl"}`` are appended to ``rows`` and saved in checkpoints.

    Args:
        every: evaluation period in optimizer steps.
        evaluator: a :class:`repro.evaluation.perplexity.PerplexityEvaluator`.
        tokens: the evaluation token stream.
        length: evaluation length (the training context).
        rows: the list to append to.
    """

    def __init__(self, every: int, evaluator, tokens, length: int, rows: list[dict[str, float]]):
        self.every, self.evaluator, self.tokens, self.length, self.rows = every, evaluator, tokens, length, rows

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        from repro.models.attention.registry import apply_attention, use_full_attention

        step = trainer.global_step
        if step == 0 or step % self.every or (self.rows and self.rows[-1]["step"] == step):
            return
        model = pl_module.model
        use_full_attention(model)
        ppl = self.evaluator.evaluate(model, self.tokens, self.length).ppl
        if getattr(model.config, "s2_attn", None) and model.config.s2_attn.get("pattern") != "full":
            apply_attention(model)  # restore the training pattern stored on the config
        model.train()
        self.rows.append({"step": step, "ppl": ppl})

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows[:] = list(state.get("rows", []))
