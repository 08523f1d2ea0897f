"""A Lightning callback that keeps the logged training curve and survives checkpoint resume."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback


class HistoryRecorder(Callback):
    """One row per optimizer step of the chosen logged metrics (``train/loss`` → column ``loss``).

    The rows are part of the checkpoint (``state_dict``), so a resumed run writes the whole curve.
    """

    def __init__(self, keys: tuple[str, ...]):
        self.keys = keys
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

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))
