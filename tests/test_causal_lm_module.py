"""CausalLMModule / PackedBlocksDataModule: exact resumption, learning, logged metrics, schedule."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers.logger import Logger
from torch.utils.data import Dataset

from repro.lit.causal_lm import (
    CausalLMModule,
    PackedBlocksDataModule,
    ResumableBlockSampler,
    build_trainer,
    fit_resumable,
    warmup_constant_lambda,
)
from repro.models.longlora import apply_adapter, load_for_context
from repro.resume import find_resume_checkpoint
from repro.schemas import AdapterConfig, ModelConfig, TrainConfig

VOCAB = 96
CONTEXT = 32
MODEL_CFG = ModelConfig(source="tiny", original_context=16, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2)


class IndexedBlocks(Dataset):
    """Packed blocks over a numpy array that also report their row index."""

    def __init__(self, blocks: np.ndarray):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(self.blocks[i].astype(np.int64))
        return {"input_ids": ids, "labels": ids.clone(), "block_index": torch.tensor(i)}


class MemoryLogger(Logger):
    """Keeps every logged metrics dict in memory."""

    def __init__(self):
        super().__init__()
        self.rows: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append(dict(metrics))


class RecordBatches(L.Callback):
    """Records the block indices of every micro-batch the module trains on."""

    def __init__(self):
        self.seen: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(batch["block_index"].tolist())


def make_module(train_cfg: TrainConfig, mode: str = "lora_plus") -> CausalLMModule:
    model = apply_adapter(load_for_context(MODEL_CFG, CONTEXT, vocab_size=VOCAB), AdapterConfig(mode=mode))
    return CausalLMModule(model, train_cfg, {"model": {"source": "tiny"}})


def trainable_state(module: CausalLMModule) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def blocks() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, VOCAB, size=(10, CONTEXT))


def test_sampler_is_a_function_of_seed_and_epoch_and_resumes_at_offset():
    n, seed = 7, 3
    stream = ResumableBlockSampler(n, seed).__iter__()
    first = [next(stream) for _ in range(3 * n)]
    expected = np.concatenate([np.random.default_rng([seed, e]).permutation(n) for e in range(3)])
    assert first == expected.tolist()
    assert sorted(first[:n]) == list(range(n)) and first[:n] != first[n : 2 * n]
    resumed = ResumableBlockSampler(n, seed, start=10).__iter__()
    assert [next(resumed) for _ in range(11)] == first[10:21]


def test_warmup_then_constant_matches_hf_constant_with_warmup():
    f = warmup_constant_lambda(4)
    assert [f(s) for s in range(7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_constant_lambda(0)(0) == 1.0


@pytest.mark.slow
def test_resume_from_checkpoint_is_exact(tmp_path, blocks):
    cfg = TrainConfig(
        context_length=CONTEXT, max_steps=8, batch_size=2, grad_accum=2, lr=1e-2, warmup_steps=2,
        seed=5, log_every_n_steps=1, ckpt_every_n_steps=4,
    )
    data = IndexedBlocks(blocks)

    # Uninterrupted: 8 optimizer steps.
    rec_full, log_full = RecordBatches(), MemoryLogger()
    full = make_module(cfg)
    trainer = build_trainer(cfg, tmp_path / "full", loggers=[log_full], callbacks=[rec_full], accelerator="cpu")
    fit_resumable(trainer, full, PackedBlocksDataModule(cfg, dataset=data), tmp_path / "full")

    # Interrupted after 4 steps, then a new process-like run resumes from last.ckpt.
    ckpt = tmp_path / "split"
    rec_a = RecordBatches()
    first = make_module(cfg)
    half = TrainConfig(**{**cfg.__dict__, "max_steps": 4})
    trainer = build_trainer(half, ckpt, callbacks=[rec_a], accelerator="cpu")
    assert fit_resumable(trainer, first, PackedBlocksDataModule(half, dataset=data), ckpt) is None
    assert find_resume_checkpoint(ckpt) is not None
    rec_b, log_b = RecordBatches(), MemoryLogger()
    resumed = make_module(cfg)
    trainer = build_trainer(cfg, ckpt, loggers=[log_b], callbacks=[rec_b], accelerator="cpu")
    assert fit_resumable(trainer, resumed, PackedBlocksDataModule(cfg, dataset=data), ckpt) == ckpt / "last.ckpt"
    assert trainer.global_step == 8

    # Same data order: 8 steps x 2 micro-batches, continuing the seeded per-epoch permutations.
    assert rec_a.seen + rec_b.seen == rec_full.seen
    flat = [i for b in rec_full.seen for i in b]
    expected = np.concatenate([np.random.default_rng([cfg.seed, e]).permutation(len(blocks)) for e in range(4)])
    assert flat == expected[: len(flat)].tolist()

    # Same parameters and final loss.
    a, b = trainable_state(full), trainable_state(resumed)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0, msg=name)
    assert log_full.rows[-1]["train/loss"] == pytest.approx(log_b.rows[-1]["train/loss"], abs=1e-6)
    # A checkpoint holds only trainable tensors.
    saved = torch.load(ckpt / "last.ckpt", weights_only=False)["state_dict"]
    assert set(saved) == {f"model.{n}" for n in a}


@pytest.mark.slow
def test_training_reduces_loss_and_logs_metrics(tmp_path, blocks):
    cfg = TrainConfig(
        context_length=CONTEXT, max_steps=12, batch_size=2, grad_accum=1, lr=3e-3, warmup_steps=0,
        seed=0, log_every_n_steps=1, ckpt_every_n_steps=100,
    )
    repeated = IndexedBlocks(np.repeat(blocks[:1], 4, axis=0))
    module = make_module(cfg, mode="full")
    batch = {k: v.unsqueeze(0) for k, v in repeated[0].items()}
    with torch.no_grad():
        before = module(batch["input_ids"], batch["labels"]).loss.item()
    logger = MemoryLogger()
    trainer = build_trainer(cfg, tmp_path / "ckpt", loggers=[logger], accelerator="cpu")
    trainer.fit(module, datamodule=PackedBlocksDataModule(cfg, dataset=repeated))
    with torch.no_grad():
        after = module(batch["input_ids"], batch["labels"]).loss.item()
    assert after < before - 0.5, (before, after)

    keys = set().union(*logger.rows)
    for key in ("train/loss", "train/lr", "train/tokens_per_s", "train/step_time_s", "train/peak_mem_mb"):
        assert key in keys, key
    lrs = [r["train/lr"] for r in logger.rows if "train/lr" in r]
    assert lrs and all(lr == pytest.approx(cfg.lr) for lr in lrs)
    speed = [r["train/tokens_per_s"] for r in logger.rows if "train/tokens_per_s" in r]
    assert all(s > 0 for s in speed)
    assert all(r["train/peak_mem_is_cuda"] == 0.0 for r in logger.rows if "train/peak_mem_is_cuda" in r)
    assert module.hparams["train"]["max_steps"] == 12 and "model" in module.hparams


def test_optimizer_sees_only_trainable_parameters():
    module = make_module(TrainConfig(lr=1e-3, warmup_steps=0), mode="lora")
    optimizer = module.configure_optimizers()["optimizer"]
    in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
    expected = {id(p) for n, p in module.model.named_parameters() if "lora_" in n}
    assert in_opt == expected
    assert optimizer.param_groups[0]["weight_decay"] == 0.0


def test_datamodule_needs_a_source():
    with pytest.raises(ValueError, match="dataset, or both path and loader"):
        PackedBlocksDataModule(TrainConfig())


def test_datamodule_loads_from_path_with_loader(tmp_path, blocks):
    path = tmp_path / "train.npy"
    np.save(path, blocks)
    cfg = TrainConfig(batch_size=3, seed=1)
    dm = PackedBlocksDataModule(cfg, path=path, loader=lambda p: IndexedBlocks(np.load(p)))
    batch = next(iter(dm.train_dataloader()))
    first = np.random.default_rng([1, 0]).permutation(len(blocks))[:3]
    assert batch["block_index"].tolist() == first.tolist()
    assert torch.equal(batch["input_ids"], torch.from_numpy(blocks[first]).long())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_mixed_training_on_gpu_logs_cuda_memory(tmp_path, blocks):
    cfg = TrainConfig(
        context_length=CONTEXT, max_steps=3, batch_size=2, grad_accum=1, lr=1e-3, warmup_steps=0,
        precision="bf16-mixed", log_every_n_steps=1, ckpt_every_n_steps=100,
    )
    module, logger = make_module(cfg), MemoryLogger()
    trainer = build_trainer(cfg, tmp_path / "ckpt", loggers=[logger], accelerator="gpu")
    trainer.fit(module, datamodule=PackedBlocksDataModule(cfg, dataset=IndexedBlocks(blocks)))
    rows = [r for r in logger.rows if "train/peak_mem_mb" in r]
    assert rows and all(r["train/peak_mem_is_cuda"] == 1.0 and r["train/peak_mem_mb"] > 0 for r in rows)
    assert all(np.isfinite(r["train/loss"]) for r in logger.rows if "train/loss" in r)


def test_sampler_shards_the_stream_across_ranks_without_overlap():
    from repro.lit.causal_lm import ResumableBlockSampler

    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    single = take(ResumableBlockSampler(10, seed=3, start=4), 12)
    ranks = [take(ResumableBlockSampler(10, seed=3, start=4, rank=r, world_size=3), 4) for r in range(3)]
    # rank r takes every 3rd element of the single-process stream, starting at its offset
    for r in range(3):
        assert ranks[r] == single[r::3]
    with pytest.raises(ValueError, match="rank 3 outside world_size 3"):
        ResumableBlockSampler(10, seed=3, rank=3, world_size=3)
