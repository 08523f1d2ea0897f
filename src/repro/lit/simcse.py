"""SimCSE training as a LightningModule (Gao, Yao, Chen, EMNLP 2021).

Unsupervised SimCSE (§3): each sentence is encoded twice, the two dropout views are positives and
the other sentences of the batch negatives. Supervised SimCSE (§4): NLI (premise, entailment,
contradiction) triplets, the contradiction as a hard negative. The loss is
:func:`repro.losses.info_nce`; the optimiser mirrors the reference's Hugging Face Trainer setup
(AdamW, no decay on biases and LayerNorm weights, linear decay after an optional warm-up), and model
selection keeps the checkpoint with the best STS-B development Spearman, evaluated every
``eval_every_n_steps`` steps (125 in the reference's ``run_unsup_example.sh``; Appendix A).

How a stage wires it::

    module = SimCSEModule(encoder, train_cfg, dev_eval=my_stsb_dev_eval)
    data = SimCSEDataModule(examples, encoder.tokenizer, encoder.cfg.max_length, train_cfg)
    trainer = L.Trainer(**build_trainer_kwargs(train_cfg), callbacks=build_callbacks(ckpt_dir), logger=...)
    trainer.fit(module, datamodule=data, ckpt_path="last" if resuming else None)

The dev evaluation runs in Lightning's validation loop (``val_check_interval = eval_every_n_steps``,
one placeholder validation batch from the DataModule), so ModelCheckpoint sees the fresh metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import Tensor
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from repro.lit.causal_lm import peak_memory_mb
from repro.lit.ranks import any_rank
from repro.losses import gather_with_grad, info_nce
from repro.models.sentence_encoder import SentenceEncoder
from repro.schemas import SimCSETrainConfig

__all__ = [
    "DEV_METRIC",
    "SimCSECollator",
    "SimCSEDataModule",
    "SimCSEModule",
    "build_callbacks",
    "build_trainer_kwargs",
]

DEV_METRIC = "eval/stsb_dev_spearman"
AVG_STS_METRIC = "eval/avg_sts"  # (STS-B dev + SICK-R dev) / 2, the reference's eval_avg_sts
DevEval = Callable[[Callable[[list[str]], Tensor]], dict[str, float]]


class SimCSECollator:
    """Tokenise a batch of sentences (unsup) or pairs/triplets (sup) into [B, V, T] tensors.

    Padding goes to the longest sentence of the batch, truncation to ``max_length``; the V views of
    an example are tokenised together, like the reference's flattened ``[bs * num_sent, len]`` input.

    Args:
        tokenizer: the encoder's tokenizer.
        max_length: truncation length (32 in the reference).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, items: Sequence[str | Sequence[str]]) -> dict[str, Tensor]:
        """Returns ``input_ids`` and ``attention_mask`` of shape [B, V, T] (V = 1 for sentences)."""
        rows = [[item] if isinstance(item, str) else list(item) for item in items]
        n_views = len(rows[0])
        for i, row in enumerate(rows):
            if len(row) != n_views or not all(isinstance(s, str) for s in row):
                raise ValueError(f"batch item {i} has {len(row)} fields, expected {n_views} strings: {row!r}")
        flat = [s for row in rows for s in row]  # [B*V] in row-major (example, view) order
        enc = self.tokenizer(flat, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        shape = (len(rows), n_views, -1)
        return {
            "input_ids": enc["input_ids"].view(shape),  # [B, V, T]
            "attention_mask": enc["attention_mask"].view(shape),  # [B, V, T]
        }


class SimCSEDataModule(L.LightningDataModule):
    """Shuffled training batches plus one placeholder validation batch that triggers the dev eval.

    The order comes from the resumable sampler LongLoRA uses (:class:`ResumableBlockSampler`): a
    permutation per epoch fixed by ``(seed, epoch)``, rank r taking stream positions r, r+W, ...; a
    resumed run starts at ``global_step × batch_size`` and so sees exactly the batches an
    uninterrupted run would (the reference's HF Trainer skips the consumed batches the same way).

    Args:
        examples: sentences (unsup) or (sent0, sent1[, hard_neg]) tuples (sup).
        tokenizer: the encoder's tokenizer.
        max_length: truncation length.
        cfg: training settings (global batch size, seed, workers).
    """

    def __init__(
        self,
        examples: Sequence[str | Sequence[str]],
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        cfg: SimCSETrainConfig,
    ) -> None:
        super().__init__()
        if not examples:
            raise ValueError("SimCSEDataModule: no training examples")
        self.examples = list(examples)
        self.collate = SimCSECollator(tokenizer, max_length)
        self.cfg = cfg

    def train_dataloader(self) -> DataLoader:
        from repro.lit.causal_lm import ResumableBlockSampler
        from repro.scale import split_global_batch

        trainer = getattr(self, "trainer", None)
        rank, world, step = (trainer.global_rank, trainer.world_size, trainer.global_step) if trainer else (0, 1, 0)
        split = split_global_batch(self.cfg.batch_size, world, key="simcse.train.batch_size")
        sampler = ResumableBlockSampler(len(self.examples), self.cfg.seed, start=step * self.cfg.batch_size,
                                        rank=rank, world_size=world)
        return DataLoader(
            self.examples,
            batch_size=split.per_device,
            sampler=sampler,
            # own generator: creating the iterator must not draw from the global RNG (dropout's)
            generator=torch.Generator().manual_seed(self.cfg.seed),
            collate_fn=self.collate,
            num_workers=self.cfg.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader([0], batch_size=1)  # the dev evaluation itself runs in on_validation_epoch_end


class SimCSEModule(L.LightningModule):
    """Contrastive training of a :class:`SentenceEncoder` (unsup or sup SimCSE).

    Logs ``train/loss``, ``train/lr``, ``train/sentences_per_s`` (examples per second of
    forward + backward + optimiser step) and ``train/peak_mem_mb`` (see :attr:`peak_mem_source`);
    every validation (= every ``eval_every_n_steps`` steps) calls ``dev_eval`` and logs
    ``eval/stsb_dev_spearman`` plus any other returned numbers as ``eval/<key>`` (e.g. align,
    uniform).

    Args:
        encoder: the sentence encoder to train.
        cfg: training settings.
        dev_eval: ``dev_eval(encode_fn) -> dict`` where ``encode_fn(list[str]) -> Tensor[N, d]``;
            the dict must hold "stsb_dev_spearman" (or "spearman"). None disables the dev eval.
    """

    def __init__(self, encoder: SentenceEncoder, cfg: SimCSETrainConfig, dev_eval: DevEval | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.cfg = cfg
        self.dev_eval = dev_eval
        self.peak_mem_source = "cpu_max_rss"
        self._step_start: float | None = None
        self._restored_rng: dict[str, Any] | None = None
        self.save_hyperparameters({"train": asdict(cfg), "encoder": asdict(encoder.cfg)})

    def embed_batch(self, batch: dict[str, Tensor]) -> Tensor:
        """Embeddings [B, V', d] of a collated batch (V' = 2 for sentences: two dropout views)."""
        ids, mask = batch["input_ids"], batch["attention_mask"]  # [B, V, T]
        n_ex, n_views, seq = ids.shape
        if n_views == 1:
            return self.encoder.forward_views(ids[:, 0], mask[:, 0], 2, fixed_dropout=self.cfg.fixed_dropout)
        emb = self.encoder(ids.reshape(n_ex * n_views, seq), mask.reshape(n_ex * n_views, seq))  # [B*V, d]
        return emb.view(n_ex, n_views, -1)  # [B, V, d]

    def compute_loss(self, z: Tensor) -> Tensor:
        """InfoNCE on [B, V, d] views (V = 2: positives; V = 3: plus hard negatives), gathered across ranks."""
        z1, z2 = gather_with_grad(z[:, 0]), gather_with_grad(z[:, 1])  # [N, d] each
        z3 = gather_with_grad(z[:, 2]) if z.shape[1] >= 3 else None
        return info_nce(z1, z2, self.cfg.temperature, z3, self.cfg.hard_negative_weight,
                        similarity=self.cfg.similarity)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.compute_loss(self.embed_batch(batch))
        # divergence guard: stop loudly (every rank together), keep the last finite checkpoint
        if any_rank(self, not bool(torch.isfinite(loss.detach()))):
            from repro.lit.causal_lm import DivergenceError

            raise DivergenceError(f"non-finite SimCSE loss {float(loss.detach())} at step {self.global_step + 1} "
                                  "(divergence guard); the last finite checkpoint is kept")
        self.log("train/loss", loss, prog_bar=True)
        if self._trainer is not None and self.trainer.optimizers:  # the lr this step uses (also a resumed first step)
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        # Every rank's loss is the global-batch loss, but its gradient only reaches the local
        # slice (gather_with_grad); DDP then *averages* the ranks, so scale by the world size to get
        # the gradient of the global loss, as one process with the whole batch computes it.
        world = self.trainer.world_size if self._trainer is not None else 1
        return loss * world if world > 1 else loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # dropout RNG at this step, so a resumed run draws the same masks as an uninterrupted one
        checkpoint["simcse_rng"] = {"torch": torch.get_rng_state(),
                                    "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restored_rng = checkpoint.get("simcse_rng")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._restored_rng is not None:  # applied just before the first resumed step
            torch.set_rng_state(self._restored_rng["torch"])
            if self._restored_rng.get("cuda") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(self._restored_rng["cuda"], self.device)
            self._restored_rng = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        if self._step_start is not None:
            elapsed = time.perf_counter() - self._step_start
            self.log("train/sentences_per_s", batch["input_ids"].shape[0] / max(elapsed, 1e-9))
        peak, self.peak_mem_source = peak_memory_mb(self.device)
        self.log("train/peak_mem_mb", peak)

    def encode_fn(self) -> Callable[[list[str]], Tensor]:
        """``encode(list[str]) -> [N, d]`` on this module's device, for evaluators."""
        return partial(self.encoder.encode, batch_size=self.cfg.eval_batch_size, device=self.device)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        return None  # placeholder batch; the work happens once per validation in the hook below

    def on_validation_epoch_end(self) -> None:
        if self.dev_eval is None:
            return
        results = dict(self.dev_eval(self.encode_fn()))
        if "spearman" in results and "stsb_dev_spearman" not in results:
            results["stsb_dev_spearman"] = results.pop("spearman")
        if "stsb_dev_spearman" not in results:
            raise KeyError(f"dev_eval must return 'stsb_dev_spearman' (or 'spearman'); got keys {sorted(results)}")
        if self.cfg.eval_avg_sts:
            if "sickr_dev_spearman" not in results:
                raise KeyError("simcse.train.eval_avg_sts needs dev_eval to return 'sickr_dev_spearman' "
                               "(SICK-R trial split in the prepared data)")
            results["avg_sts"] = (results["stsb_dev_spearman"] + results["sickr_dev_spearman"]) / 2
        for key, value in results.items():
            if isinstance(value, (int, float)) or (isinstance(value, Tensor) and value.numel() == 1):
                self.log(f"eval/{key}", float(value), prog_bar=key == "stsb_dev_spearman")

    def configure_optimizers(self) -> dict[str, Any]:
        # HF Trainer (used by the reference) exempts biases and LayerNorm weights from weight decay
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (no_decay if name.endswith("bias") or "LayerNorm" in name or "norm" in name else decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.cfg.lr)
        total = self.cfg.max_steps if self.cfg.max_steps > 0 else int(self.trainer.estimated_stepping_batches)
        scheduler = get_linear_schedule_with_warmup(optimizer, self.cfg.warmup_steps, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class PeriodicLastCheckpoint(Callback):
    """Refresh ``last.ckpt`` every ``every`` steps between evaluations (which refresh it themselves).

    Steps that are evaluation steps are skipped: a checkpoint written before that step's evaluation
    would, on resume, skip the evaluation (Lightning fast-forwards a finished step's validation).
    """

    def __init__(self, ckpt_dir: str | Path, every: int, eval_every: int) -> None:
        self.path, self.every, self.eval_every = Path(ckpt_dir) / "last.ckpt", every, eval_every

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every > 0 and step % self.every == 0 and step % self.eval_every and step < trainer.max_steps:
            trainer.save_checkpoint(str(self.path))  # every rank calls it; Lightning writes on rank 0


def build_callbacks(ckpt_dir: str | Path, cfg: SimCSETrainConfig | None = None) -> list[Callback]:
    """ModelCheckpoint keeping the best STS-B dev Spearman (the paper's model selection) and ``last.ckpt``.

    ``last.ckpt`` is rewritten at every evaluation (and every ``cfg.ckpt_every_n_steps`` steps), so
    ``trainer.fit(..., ckpt_path=last)`` resumes. The best file is ``best-step=<N>.ckpt``;
    ``callbacks[0].best_model_path`` names it.
    """
    best = ModelCheckpoint(
        dirpath=str(ckpt_dir),
        filename="best-step={step}",
        auto_insert_metric_name=False,
        monitor=AVG_STS_METRIC if cfg is not None and cfg.eval_avg_sts else DEV_METRIC,
        mode="max",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,  # overwrite the periodic last.ckpt (else the evaluation's goes to last-v1.ckpt)
    )
    if cfg is not None and cfg.ckpt_every_n_steps > 0:
        return [best, PeriodicLastCheckpoint(ckpt_dir, cfg.ckpt_every_n_steps, cfg.eval_every_n_steps)]
    return [best]


def build_trainer_kwargs(cfg: SimCSETrainConfig) -> dict[str, Any]:
    """Trainer arguments that make validation (the dev eval) run every ``eval_every_n_steps`` steps."""
    return {
        "max_steps": cfg.max_steps,
        "precision": cfg.precision,
        "val_check_interval": cfg.eval_every_n_steps,
        "check_val_every_n_epoch": None,
        "limit_val_batches": 1,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
        "gradient_clip_val": cfg.gradient_clip_val if cfg.gradient_clip_val > 0 else None,  # HF Trainer: 1.0
        "gradient_clip_algorithm": "norm",
        "use_distributed_sampler": False,  # the resumable sampler splits the stream by rank itself
    }
