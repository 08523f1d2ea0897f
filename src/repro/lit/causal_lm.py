"""Causal-LM training for LongLoRA: LightningModule, packed-block DataModule and an exactly resumable Trainer.

Optimisation follows LongLoRA §4.1 and the reference ``fine-tune.py`` launch settings: AdamW (betas 0.9 and
``adam_beta2``: 0.999 as fine-tune.py's Trainer runs, §4.1 states 0.95) with weight decay 0,
learning rate 2e-5 (1e-5 for 70B), 20 linear warm-up steps then a constant rate (Hugging Face's
``constant_with_warmup``), gradient clipping at 1.0 (the HF Trainer default), per-device batch 1 with 8
gradient-accumulation steps on 8 GPUs, 1000 steps.

Resumption is exact: the order of training blocks is a function of ``(seed, epoch)`` only, and a resumed run starts
its sampler at ``global_step * batch_size * grad_accum``, so it sees the very next batch the interrupted run would
have seen. Lightning 2.6 restores the loop state (hence ``global_step``) before it asks for ``train_dataloader``.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset, Sampler

from repro.lit.ranks import any_rank
from repro.models.activation_checkpointing import apply_checkpointing
from repro.models.chunked_loss import causal_lm_loss
from repro.resume import find_resume_checkpoint
from repro.schemas import TrainConfig


def resolve_batch(train_cfg: TrainConfig, world_size: int, prefix: str = "longlora.train") -> TrainConfig:
    """``train_cfg`` with ``grad_accum`` derived from the global batch over ``world_size`` devices.

    Raises:
        repro.scale.BatchSplitError: naming ``<prefix>.global_batch_size`` and ``<prefix>.batch_size`` when the
            global batch does not divide over devices × nodes × micro batch, or when an explicit ``grad_accum``
            disagrees with it.
    """
    from dataclasses import replace

    from repro.scale import BatchSplitError, split_global_batch

    if train_cfg.global_batch_size <= 0:
        return replace(train_cfg, grad_accum=max(1, train_cfg.grad_accum))
    split = split_global_batch(train_cfg.global_batch_size, world_size, key=f"{prefix}.global_batch_size",
                               micro_batch=train_cfg.batch_size, micro_key=f"{prefix}.batch_size")
    if train_cfg.grad_accum and train_cfg.grad_accum != split.accumulation:
        raise BatchSplitError(
            f"{prefix}.grad_accum={train_cfg.grad_accum} contradicts {prefix}.global_batch_size="
            f"{train_cfg.global_batch_size} over {world_size} device(s) × {prefix}.batch_size={train_cfg.batch_size} "
            f"(= accumulation {split.accumulation}); leave grad_accum at 0 to derive it")
    return replace(train_cfg, grad_accum=split.accumulation)


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or gradient norm; the message names the step and the value."""


def warmup_constant_lambda(warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier of HF ``constant_with_warmup``: ``step / warmup`` while warming up, then 1."""

    def factor(step: int) -> float:
        return 1.0 if step >= warmup_steps else float(step) / float(max(1, warmup_steps))

    return factor


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak memory in MiB and what it measures.

    Returns:
        ``(torch.cuda.max_memory_allocated, "cuda_max_allocated")`` on a CUDA device, otherwise the process's peak
        resident set size from ``getrusage`` and ``"cpu_max_rss"``.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return (rss / 2**20 if sys.platform == "darwin" else rss / 2**10), "cpu_max_rss"


class CausalLMModule(L.LightningModule):
    """Next-token training of an (adapted) causal LM on packed blocks.

    The loss is the model's own shifted cross-entropy (``labels`` equal to ``input_ids``). Only trainable parameters
    go to AdamW and into checkpoints, so a LoRA checkpoint of a 7B model stays small; the frozen base is rebuilt
    from its source on resume (``strict_loading`` is off for that reason).

    Logged every ``log_every_n_steps`` optimizer steps: ``train/loss``, ``train/lr``, ``train/tokens_per_s``
    (tokens over wall time since the previous log), ``train/step_time_s`` (mean seconds per optimizer step over the
    same interval), ``train/peak_mem_mb`` and ``train/peak_mem_is_cuda`` (1 for CUDA ``max_memory_allocated``, 0 for
    the CPU process's peak RSS).

    Args:
        model: The model to train (a peft model, or a plain one for full fine-tuning).
        train_cfg: Training config.
        config_dicts: Plain config dictionaries (model / adapter / attention ...) stored as hyper-parameters.
    """

    def __init__(self, model: torch.nn.Module, train_cfg: TrainConfig, config_dicts: dict[str, Any] | None = None):
        super().__init__()
        self.model = apply_checkpointing(model, train_cfg.activation_checkpointing)
        self.train_cfg = train_cfg
        self.save_hyperparameters({"train": asdict(train_cfg), **(config_dicts or {})})
        self.strict_loading = False
        self._interval_tokens = 0
        self._interval_start: float | None = None
        self._interval_first_step = 0
        self._step_loss_sum: torch.Tensor | None = None
        self._step_micro = 0

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
        # use_cache=False: a training forward must not build a KV cache (the reference sets it off too).
        return self.model(input_ids=input_ids, labels=labels, use_cache=False)

    def loss(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss of one micro-batch (next-token cross-entropy; :class:`MaskedLMModule` overrides it)."""
        return causal_lm_loss(self.model, input_ids, labels, self.train_cfg.loss_chunk_size)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        input_ids = batch["input_ids"]  # (B, T)
        labels = batch.get("labels", input_ids)  # (B, T); HF shifts inside the loss
        if self._interval_start is None:
            self._interval_start = time.perf_counter()
            self._interval_first_step = self.global_step
        loss = self.loss(input_ids, labels)
        if any_rank(self, not bool(torch.isfinite(loss.detach()))):
            raise DivergenceError(f"non-finite training loss {float(loss.detach())} at step {self.global_step + 1} "
                                  "(divergence guard); the last finite checkpoint is kept")
        self._interval_tokens += input_ids.numel()
        detached = loss.detach().float()
        self._step_loss_sum = detached if self._step_loss_sum is None else self._step_loss_sum + detached
        self._step_micro += 1
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, batch_size=input_ids.shape[0])
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])) \
            if grads else torch.zeros(())
        if any_rank(self, not bool(torch.isfinite(norm))):
            raise DivergenceError(f"non-finite gradient norm {float(norm)} at step {self.global_step + 1} "
                                  "(divergence guard); the last finite checkpoint is kept")
        # train/loss is the mean over the whole global batch: every micro-batch of every rank.
        mean = self._step_loss_sum / max(self._step_micro, 1)
        self.log("train/loss", mean, on_step=True, prog_bar=True, sync_dist=True, reduce_fx="mean")
        self._step_loss_sum, self._step_micro = None, 0

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = self.global_step  # already incremented when this micro-batch finished an optimizer step
        steps = step - self._interval_first_step
        if steps <= 0 or step % self.train_cfg.log_every_n_steps != 0 or self._interval_start is None:
            return
        elapsed = max(time.perf_counter() - self._interval_start, 1e-9)
        mem, source = peak_memory_mb(self.device)
        self.log_dict(
            {
                "train/tokens_per_s": self._interval_tokens / elapsed,
                "train/step_time_s": elapsed / steps,
                "train/peak_mem_mb": mem,
                "train/peak_mem_is_cuda": float(source == "cuda_max_allocated"),
            },
            on_step=True,
        )
        self._interval_tokens, self._interval_start = 0, None

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("CausalLMModule: the model has no trainable parameters (check longlora.adapter)")
        optimizer = torch.optim.AdamW(params, lr=self.train_cfg.lr, weight_decay=self.train_cfg.weight_decay,
                                      betas=(0.9, self.train_cfg.adam_beta2))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_constant_lambda(self.train_cfg.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}


class MaskedLMModule(CausalLMModule):
    """Masked-language-model training (BERT's objective) with the same loop, logging, guards and checkpoints.

    Batches are :class:`repro.data.mlm_data.MaskedBlocks` items: ``labels`` hold the original token at the
    chosen positions and -100 elsewhere; the loss is the model's own (``BertForMaskedLM``) cross-entropy over
    the chosen positions. The blocks are pad-free, so no attention mask is needed.
    """

    def __init__(self, model: torch.nn.Module, train_cfg: TrainConfig, config_dicts: dict[str, Any] | None = None):
        super().__init__(model, train_cfg, config_dicts)
        self._restored_rng: torch.Tensor | None = None

    def loss(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, labels=labels).loss

    # BERT trains with dropout: the RNG state is part of the checkpoint, so that a resumed run draws the
    # dropout masks an uninterrupted one draws (the MLM masks come from the data, by stream position).
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["mlm_torch_rng"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restored_rng = checkpoint.get("mlm_torch_rng")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._restored_rng is not None:  # just before the first resumed step
            torch.set_rng_state(self._restored_rng)
            self._restored_rng = None


class ResumableBlockSampler(Sampler[int]):
    """Infinite sampler: a fresh permutation of all blocks per epoch, determined by ``(seed, epoch)``.

    Args:
        num_blocks: Dataset length.
        seed: Data-order seed.
        start: Index into the infinite stream to start from (blocks consumed by all ranks so far on resume).
        rank: This process's rank; with ``world_size`` ranks, rank r takes stream positions start+r, start+r+W, ...
        world_size: Number of data-parallel ranks.
    """

    def __init__(self, num_blocks: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1):
        if num_blocks <= 0:
            raise ValueError("ResumableBlockSampler: the dataset is empty")
        if not 0 <= rank < world_size:
            raise ValueError(f"ResumableBlockSampler: rank {rank} outside world_size {world_size}")
        self.num_blocks, self.seed, self.start = num_blocks, seed, start
        self.rank, self.world_size = rank, world_size

    def permutation(self, epoch: int) -> np.ndarray:
        """The block order of one epoch."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_blocks)

    def __iter__(self) -> Iterator[int]:
        position = self.start
        while True:
            epoch, offset = divmod(position, self.num_blocks)
            order = self.permutation(epoch)
            for i, index in enumerate(order[offset:], start=position):
                if (i - self.start) % self.world_size == self.rank:
                    yield int(index)
            position = (epoch + 1) * self.num_blocks


class PackedBlocksDataModule(L.LightningDataModule):
    """Training blocks (``{"input_ids", "labels"}`` of length ``context_length``) in a resumable order.

    Args:
        train_cfg: Batch size, accumulation, seed and worker count come from here.
        dataset: A map-style dataset of packed blocks (e.g. ``repro.data.lm_data.PackedBlocks``).
        path: Alternatively a file to load lazily with ``loader(path)`` in :meth:`setup`.
        loader: Callable turning ``path`` into a dataset.
    """

    def __init__(
        self,
        train_cfg: TrainConfig,
        dataset: Dataset | None = None,
        path: str | Path | None = None,
        loader: Callable[[Path], Dataset] | None = None,
    ):
        super().__init__()
        if dataset is None and (path is None or loader is None):
            raise ValueError("PackedBlocksDataModule needs a dataset, or both path and loader")
        self.train_cfg, self.dataset, self.path, self.loader = train_cfg, dataset, path, loader

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = self.loader(Path(self.path))

    def samples_consumed(self) -> int:
        """Blocks already used by completed optimizer steps (0 without a trainer)."""
        trainer = getattr(self, "trainer", None)
        step, world = (trainer.global_step, trainer.world_size) if trainer is not None else (0, 1)
        return step * self.train_cfg.batch_size * max(self.train_cfg.grad_accum, 1) * world

    def train_dataloader(self) -> DataLoader:
        self.setup()
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = ResumableBlockSampler(len(self.dataset), self.train_cfg.seed, start=self.samples_consumed(),
                                        rank=rank, world_size=world)
        return DataLoader(
            self.dataset,
            batch_size=self.train_cfg.batch_size,
            sampler=sampler,
            num_workers=self.train_cfg.num_workers,
            drop_last=False,
        )


def progress_bar_wanted() -> bool:
    """Whether Lightning should draw its progress bar: only on a terminal.

    Under ``dvc repro`` with its output in a log (``make repro``'s workers) the bar's refresh thread and
    redraws cost about 7% of a tiny stage's wall time and write nothing anyone reads.
    """
    return sys.stdout.isatty()


def build_trainer(
    train_cfg: TrainConfig,
    ckpt_dir: str | Path,
    loggers: list[Any] | bool = False,
    callbacks: list[Any] | None = None,
    accelerator: str = "auto",
    devices: int = 1,
    strategy: Any = "auto",
    num_nodes: int = 1,
    progress: bool | None = None,
) -> L.Trainer:
    """A Trainer for ``train_cfg`` that checkpoints every ``ckpt_every_n_steps`` and always refreshes ``last.ckpt``.

    The caller resolves the batch first (:func:`resolve_batch`, which names ``longlora.train.global_batch_size``
    when it does not divide), so the module, the data module and the trainer share one ``train_cfg``. Use it with
    :func:`fit_resumable` so a rerun continues from the newest intact checkpoint after a crash.

    ``train_cfg.precision`` is checked by :class:`repro.schemas.TrainConfig` itself (Lightning's strings).

    Raises:
        ValueError: when ``grad_accum`` is not resolved.
    """
    if train_cfg.grad_accum < 1:
        raise ValueError(f"train_cfg.grad_accum={train_cfg.grad_accum} is unresolved: pass resolve_batch(train_cfg, "
                         f"{devices * num_nodes}), which derives it from longlora.train.global_batch_size")
    L.seed_everything(train_cfg.seed, workers=True, verbose=False)
    checkpoint = ModelCheckpoint(
        dirpath=str(ckpt_dir),
        every_n_train_steps=train_cfg.ckpt_every_n_steps,
        save_last=True,
        save_top_k=1,  # the newest periodic checkpoint (plus last.ckpt); a 7B full fine-tune is large
        filename="step{step:06d}",
        auto_insert_metric_name=False,
    )
    return L.Trainer(
        max_steps=train_cfg.max_steps,
        accumulate_grad_batches=train_cfg.grad_accum,
        precision=train_cfg.precision,
        gradient_clip_val=train_cfg.gradient_clip_val,
        log_every_n_steps=train_cfg.log_every_n_steps,
        callbacks=[checkpoint, *(callbacks or [])],
        logger=loggers,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        enable_progress_bar=progress_bar_wanted() if progress is None else progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        deterministic="warn",
        use_distributed_sampler=False,
    )


def fit_resumable(
    trainer: L.Trainer, module: CausalLMModule, datamodule: PackedBlocksDataModule, ckpt_dir: str | Path
) -> Path | None:
    """Fit, resuming from the newest intact checkpoint in ``ckpt_dir``; returns the checkpoint resumed from."""
    resume = find_resume_checkpoint(ckpt_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
    return resume
