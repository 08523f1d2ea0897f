"""Exact resume of SimCSE training: a run killed mid-epoch and resumed from ``last.ckpt`` sees the same
batches in the same order, the same dropout masks, optimizer and scheduler state, and ends bit for bit
where an uninterrupted run ends (weights, per-step losses, best dev score)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from scipy.stats import spearmanr

from repro.lit.simcse import SimCSEDataModule, SimCSEModule, build_callbacks, build_trainer_kwargs
from repro.models.sentence_encoder import build_encoder
from repro.schemas import EncoderConfig, SimCSETrainConfig


class Killed(RuntimeError):
    """The injected crash."""


class Kill(Callback):
    """Raise after optimizer step ``at`` (a crash: no checkpoint is written on the way out)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            raise Killed(f"killed at step {self.at}")


class Losses(Callback):
    def __init__(self) -> None:
        self.by_step: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.by_step[trainer.global_step] = float(trainer.callback_metrics["train/loss"])


def _run(tokenizer_dir: Path, sentences: Callable[[int, int], list[str]], ckpt: Path, mode: str,
         kill_at: int | None):
    """Train 16 steps (dev eval every 6, last.ckpt also every 4); with ``kill_at``, crash there and rerun."""
    cfg = SimCSETrainConfig(mode=mode, lr=1e-3, batch_size=8, max_steps=16, eval_every_n_steps=6,
                            ckpt_every_n_steps=4, seed=3)
    if mode == "unsup":
        examples = sentences(44, 1)  # 44 / 8: epochs end mid-batch, the resumed stream must still agree
    else:
        examples = list(zip(sentences(30, 1), sentences(30, 2), sentences(30, 3), strict=True))
    dev_a, dev_b = sentences(12, 7), sentences(12, 8)
    gold = torch.arange(12.0).flip(0).tolist()
    losses = Losses()

    def attempt(extra):
        L.seed_everything(cfg.seed, verbose=False)  # a fresh process: same seed, fresh model
        encoder = build_encoder(EncoderConfig(source="tiny", tokenizer_path=str(tokenizer_dir), pooler="cls",
                                              dropout=0.1))

        def dev_eval(encode_fn):
            a, b = encode_fn(dev_a), encode_fn(dev_b)
            return {"spearman": float(100 * spearmanr(torch.cosine_similarity(a, b).numpy(), gold)[0])}

        module = SimCSEModule(encoder, cfg, dev_eval)
        data = SimCSEDataModule(examples, encoder.tokenizer, 32, cfg)
        callbacks = build_callbacks(ckpt, cfg)
        trainer = L.Trainer(**build_trainer_kwargs(cfg), accelerator="cpu", devices=1, logger=False,
                            enable_progress_bar=False, enable_model_summary=False,
                            callbacks=[*callbacks, losses, *extra])
        last = ckpt / "last.ckpt"
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if last.is_file() else None)
        return module, callbacks[0]

    if kill_at is not None:
        with pytest.raises(Killed):
            attempt([Kill(kill_at)])
    module, best = attempt([])
    return module, best, losses.by_step


@pytest.mark.parametrize(("mode", "kill_at"), [("unsup", 3), ("unsup", 5), ("unsup", 9), ("sup", 13)])
def test_killed_and_resumed_run_ends_bit_for_bit_like_an_uninterrupted_one(tokenizer_dir_resume, make_sentences,
                                                                           tmp_path, mode, kill_at):
    ref_module, ref_best, ref_losses = _run(tokenizer_dir_resume, make_sentences, tmp_path / "ref", mode, None)
    module, best, losses = _run(tokenizer_dir_resume, make_sentences, tmp_path / "killed", mode, kill_at)
    assert sorted(losses) == list(range(1, 17))
    assert losses == ref_losses  # same batches, same dropout masks, same optimizer/scheduler steps
    for (name, a), (_, b) in zip(ref_module.state_dict().items(), module.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert best.best_model_score.item() == ref_best.best_model_score.item()
    assert Path(best.best_model_path).name == Path(ref_best.best_model_path).name


@pytest.fixture(scope="module")
def tokenizer_dir_resume(make_wordpiece_dir, make_sentences) -> Path:
    return make_wordpiece_dir(make_sentences.words)
