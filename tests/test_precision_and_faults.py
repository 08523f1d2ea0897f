"""fp32 master weights under bf16-mixed, fp32 merge, batch split, divergence guard, checkpoint fallback."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "disabled")

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from repro.lit.causal_lm import (
    CausalLMModule,
    DivergenceError,
    PackedBlocksDataModule,
    build_trainer,
    fit_resumable,
    resolve_batch,
)
from repro.models.longlora import build_longlora_model
from repro.precision import check_trainable_fp32, merge_in_fp32, upcast_trainable
from repro.resume import checkpoint_is_intact, find_resume_checkpoint
from repro.scale import BatchSplitError, resolve_strategy, split_global_batch
from repro.schemas import AdapterConfig, ModelConfig, TrainConfig

VOCAB, CONTEXT = 96, 32


class Blocks(Dataset):
    def __init__(self, n: int = 64, seed: int = 0):
        self.blocks = np.random.default_rng(seed).integers(0, VOCAB, size=(n, CONTEXT))

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(self.blocks[i].astype(np.int64))
        return {"input_ids": ids, "labels": ids.clone()}


def _model(dtype: str, mode: str = "lora_plus"):
    cfg = ModelConfig(source="tiny", original_context=16, dtype=dtype)
    return build_longlora_model(cfg, AdapterConfig(mode=mode), CONTEXT, vocab_size=VOCAB)


def _extras(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().clone() for n, p in model.named_parameters()
            if p.requires_grad and "lora_" not in n}


def _train(model, precision: str, tmp, steps: int = 20, lr: float = 2e-5):
    cfg = TrainConfig(context_length=CONTEXT, max_steps=steps, global_batch_size=2, batch_size=2, lr=lr,
                      warmup_steps=0, precision=precision, ckpt_every_n_steps=1000)
    module = CausalLMModule(model, resolve_batch(cfg, 1))
    trainer = build_trainer(resolve_batch(cfg, 1), tmp, accelerator="cpu", progress=False)
    fit_resumable(trainer, module, PackedBlocksDataModule(resolve_batch(cfg, 1), dataset=Blocks()), tmp)
    return model


def test_bf16_mixed_moves_norms_and_embeddings_as_fp32_does(tmp_path):
    """Tolerance: at least 95% of the norm/embedding entries that fp32 training moves also move under
    bf16-mixed (a norm of the tiny model has 64 entries, and one gradient that underflows in bf16 is
    1.6% of them; which one does depends on the CPU's bf16 kernels), and the update vectors agree to
    cosine ≥ 0.95 and norm ratio within [0.8, 1.25] (bf16 autocast perturbs the gradients, AdamW
    normalises them). Norms or embeddings left untrained under bf16 would move 0%."""
    fp32 = _model("float32")
    bf16 = _model("bfloat16")
    upcast_trainable(bf16)
    check_trainable_fp32(bf16)
    assert any(p.dtype == torch.bfloat16 for p in bf16.parameters() if not p.requires_grad)  # frozen base stays bf16
    before32, before16 = _extras(fp32), _extras(bf16)
    _train(fp32, "32-true", tmp_path / "a")
    _train(bf16, "bf16-mixed", tmp_path / "b")
    after32, after16 = _extras(fp32), _extras(bf16)
    assert any("norm" in n for n in before32) and any("embed" in n for n in before32)
    for name in before32:
        d32, d16 = (after32[name] - before32[name]).flatten(), (after16[name] - before16[name]).flatten()
        moved32, moved16 = (d32 != 0), (d16 != 0)
        assert moved32.float().mean() > 0.5, name
        assert moved16[moved32].float().mean() > 0.95, name
        cos = torch.nn.functional.cosine_similarity(d32, d16, dim=0)
        ratio = d16.norm() / d32.norm()
        assert cos > 0.95 and 0.8 < ratio < 1.25, (name, float(cos), float(ratio))


def test_bf16_weights_updated_in_place_barely_move(tmp_path):
    """The failure mode the upcast prevents: AdamW on bf16 norms at lr 2e-5 rounds every update away."""
    bf16 = _model("bfloat16")
    before = _extras(bf16)
    _train(bf16, "bf16-mixed", tmp_path / "c")
    after = _extras(bf16)
    norms = [n for n in before if "norm" in n]
    moved = sum(int((after[n] != before[n]).sum()) for n in norms)
    assert moved == 0


def test_merged_model_logits_equal_adapter_logits():
    torch.manual_seed(0)
    model = _model("bfloat16")
    upcast_trainable(model)
    with torch.no_grad():  # a non-zero LoRA delta (B starts at zero) and moved extras
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)
    ids = torch.randint(0, VOCAB, (2, CONTEXT))
    model.eval()
    ref = model.float()(input_ids=ids).logits
    merged = merge_in_fp32(model, torch.float32)
    out = merged(input_ids=ids).logits
    diff = (out - ref).abs().max().item()
    print(f"max |merged - adapter| logits (fp32): {diff:.3g}")
    assert diff < 1e-4


def test_global_batch_split_and_errors_name_the_keys():
    assert split_global_batch(64, 8, key="k", micro_batch=1).accumulation == 8
    cfg = TrainConfig(global_batch_size=64, batch_size=1)
    assert resolve_batch(cfg, 8).grad_accum == 8 and resolve_batch(cfg, 1).grad_accum == 64
    assert resolve_batch(TrainConfig(global_batch_size=64, batch_size=2), 16).grad_accum == 2
    with pytest.raises(BatchSplitError, match=r"longlora.train.global_batch_size=64 .*run.devices × run.num_nodes = 3"):
        resolve_batch(cfg, 3)
    with pytest.raises(BatchSplitError, match=r"longlora.train.batch_size=3"):
        resolve_batch(TrainConfig(global_batch_size=64, batch_size=3), 8)
    with pytest.raises(BatchSplitError, match="grad_accum=4 contradicts"):
        resolve_batch(TrainConfig(global_batch_size=64, batch_size=1, grad_accum=4), 8)
    assert resolve_strategy("auto", "lora_plus", 8) == "ddp"
    assert resolve_strategy("auto", "full", 8) == "fsdp"
    assert resolve_strategy("auto", "full", 1) == "auto"
    assert resolve_strategy("deepspeed_stage_3", "full", 8) == "deepspeed_stage_3"


def test_build_trainer_takes_a_resolved_batch_only(tmp_path):
    with pytest.raises(ValueError, match=r"grad_accum=0 is unresolved: pass resolve_batch\(train_cfg, 8\)"):
        build_trainer(TrainConfig(global_batch_size=64, batch_size=1), tmp_path, devices=8, accelerator="cpu")


class _PoisonAt(L.Callback):
    """Fills one trainable weight with NaN before optimizer step ``step`` (a blown-up update)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(p for p in pl_module.parameters() if p.requires_grad).fill_(float("nan"))


def test_non_finite_loss_stops_with_step_and_value_and_keeps_checkpoint(tmp_path):
    model = _model("float32")
    cfg = resolve_batch(TrainConfig(context_length=CONTEXT, max_steps=30, global_batch_size=2, batch_size=2,
                                    lr=1e-3, warmup_steps=0, ckpt_every_n_steps=2), 1)
    module = CausalLMModule(model, cfg)
    trainer = build_trainer(cfg, tmp_path, accelerator="cpu", progress=False, callbacks=[_PoisonAt(5)])
    with pytest.raises(DivergenceError, match=r"non-finite training loss nan at step 6"):
        fit_resumable(trainer, module, PackedBlocksDataModule(cfg, dataset=Blocks()), tmp_path)
    assert trainer.global_step == 5
    kept = find_resume_checkpoint(tmp_path)
    assert kept is not None
    state = torch.load(kept, weights_only=False)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())  # the last checkpoint is a finite one


def test_truncated_last_checkpoint_falls_back_to_intact_one(tmp_path, caplog):
    model = _model("float32")
    cfg = resolve_batch(TrainConfig(context_length=CONTEXT, max_steps=4, global_batch_size=2, batch_size=2,
                                    lr=1e-3, warmup_steps=0, ckpt_every_n_steps=2), 1)
    trainer = build_trainer(cfg, tmp_path, accelerator="cpu", progress=False)
    fit_resumable(trainer, CausalLMModule(model, cfg), PackedBlocksDataModule(cfg, dataset=Blocks()), tmp_path)
    last = tmp_path / "last.ckpt"
    periodic = sorted(tmp_path.glob("step*.ckpt"))
    assert checkpoint_is_intact(last) and periodic
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    assert not checkpoint_is_intact(last)
    with caplog.at_level("WARNING", logger="repro"):
        assert find_resume_checkpoint(tmp_path) == periodic[-1]
    assert any(str(last) in r.message for r in caplog.records)
    for p in periodic:
        p.write_bytes(b"garbage")
    with caplog.at_level("WARNING", logger="repro"):
        assert find_resume_checkpoint(tmp_path) is None
    assert any("starts fresh" in r.message for r in caplog.records)


def test_simcse_non_finite_loss_stops_with_step_and_value():
    from repro.lit.simcse import SimCSEModule

    class _NaN(SimCSEModule):
        def compute_loss(self, embeddings):
            return torch.tensor(float("nan"), requires_grad=True)

        def embed_batch(self, batch):
            return None

    module = object.__new__(_NaN)
    torch.nn.Module.__init__(module)
    module._trainer = None
    with pytest.raises(DivergenceError, match=r"non-finite SimCSE loss nan at step 1"):
        _NaN.training_step(module, {}, 0)
