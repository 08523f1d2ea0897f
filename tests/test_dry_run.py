"""Dry runs of every profile × experiment × ablation variant: trainable counts against a closed-form count.

The closed-form counts below come from the architectures alone (Llama: embeddings, q/k/v/o and MLP
matrices, RMSNorms, LoRA's r·(in + out) per adapted matrix; BERT without its pooling layer plus the
MLP head), with the vocabularies as measured: Llama-2 32,000; SmolLM2 49,152 with tied embeddings
(ENVIRONMENT.md §2); the tiny models' configured tokenizer sizes.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from repro.config import validate
from repro.dryrun import HUB_ENCODERS, longlora_plan, simcse_plan
from repro.workflows.ablations import variant_config, variant_names

CONF = Path(__file__).resolve().parents[1] / "conf"
PROFILES = sorted(p.stem for p in (CONF / "profile").glob("*.yaml"))
EXPERIMENTS = [None, *sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))]


@cache
def _composed(profile: str, experiment: str | None):
    overrides = [f"profile={profile}"] + ([f"experiment={experiment}"] if experiment else [])
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return validate(compose("config", overrides=overrides))


def llama_trainable(m, adapter, vocab: int, tied: bool) -> tuple[int, int]:
    h, layers, heads, kv, inter = m.hidden_size, m.num_layers, m.num_heads, m.num_kv_heads, m.intermediate_size
    kv_out = kv * (h // heads)
    dims = {"q_proj": (h, h), "k_proj": (h, kv_out), "v_proj": (h, kv_out), "o_proj": (h, h)}
    lora = layers * sum(adapter.r * (i + o) for name, (i, o) in dims.items() if name in adapter.target_modules)
    embed, norms = vocab * h, layers * 2 * h + h
    base = embed + (0 if tied else vocab * h) + layers * (2 * h * h + 2 * h * kv_out + 3 * h * inter) + norms
    if adapter.mode == "full":
        return base, base
    extra = (embed if "embed" in adapter.trainable_extra else 0) + (norms if "norm" in adapter.trainable_extra else 0)
    return base + lora, lora + (extra if adapter.mode == "lora_plus" else 0)


def bert_trainable(shape: dict[str, int], mlp: bool = True) -> int:
    h, inter, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    emb = (shape["vocab_size"] + shape["max_position_embeddings"] + shape["type_vocab_size"]) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h * inter + inter + h + 4 * h
    return emb + layers * layer + (h * h + h if mlp else 0)


# SmolLM2-135M's published config (hidden 576, 30 layers, 9 heads of 64, 3 key/value heads, MLP 1536,
# vocabulary 49,152, tied embeddings): the decoder as an encoder is its base model, every weight trained
SMOLLM2 = SimpleNamespace(hidden_size=576, num_layers=30, num_heads=9, num_kv_heads=3, intermediate_size=1536)
FULL = SimpleNamespace(mode="full", r=0, target_modules=(), trainable_extra=())


def _cases():
    cases = []
    for profile in PROFILES:
        for experiment in EXPERIMENTS:
            cases.append((profile, experiment, None, None))
            base = _composed(profile, experiment)
            for ablation in [k for k in base.ablations if k not in ("name", "variant")]:
                for variant in variant_names(base, ablation):
                    cases.append((profile, experiment, ablation, variant))
    return cases


def _check_longlora(cfg, seen: set) -> None:
    key = json.dumps([OmegaConf.to_container(cfg.longlora), OmegaConf.to_container(cfg.run)], sort_keys=True)
    if key in seen:
        return
    seen.add(key)
    plan = longlora_plan(cfg)
    m, a = cfg.longlora.model, cfg.longlora.adapter
    vocab, tied = {"hub": (32000, False), "gguf": (49152, True)}.get(
        m.source, (int(cfg.longlora.data.tokenizer.vocab_size), False))
    total, trainable = llama_trainable(m, a, vocab, tied)
    assert (plan.total_params, plan.trainable_params) == (total, trainable), (m.source, a.mode)
    world = int(cfg.run.devices) * int(cfg.run.num_nodes)
    assert plan.per_device_batch * plan.accumulation * world == int(cfg.longlora.train.global_batch_size)


def _check_simcse(cfg, run: str) -> None:
    enc = cfg.simcse.encoder
    plan = simcse_plan(cfg, run)
    mlp = enc.pooler == "cls"  # SentenceEncoder builds its MLP head for the CLS pooler only
    if enc.get("gguf_file"):  # SmolLM2 as an LLM2Vec-style encoder (the real_cpu profile)
        h = SMOLLM2.hidden_size
        assert plan.trainable_params == llama_trainable(SMOLLM2, FULL, 49152, True)[0] + (h * h + h if mlp else 0), run
        return
    if enc.source == "hub":
        shape = HUB_ENCODERS[enc.name_or_path]
    elif enc.source == "package":  # all-MiniLM-L6-v2's published config
        shape = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, intermediate_size=1536,
                     max_position_embeddings=512, type_vocab_size=2)
    else:
        shape = dict(vocab_size=int(cfg.simcse.data.vocab_size), hidden_size=enc.hidden_size,
                     num_hidden_layers=enc.num_layers, intermediate_size=enc.intermediate_size,
                     max_position_embeddings=enc.max_position_embeddings, type_vocab_size=2)
    assert plan.trainable_params == bert_trainable(shape, mlp), (enc.source, run)
    world = int(cfg.run.devices) * int(cfg.run.num_nodes)
    assert plan.per_device_batch * world == plan.tokens_per_step // ((3 if plan.stage.endswith("sup") and
                                                                      "unsup" not in plan.stage else 2)
                                                                     * int(enc.max_length))


def _section_key(base, ablation, variant, kind) -> str:
    """What a case's plan depends on: an experiment that leaves this section alone gives the same plan."""
    section = "simcse" if kind == "simcse" else "longlora"
    run = {k: v for k, v in OmegaConf.to_container(base.run).items() if k != "experiment"}
    node = None if ablation is None else base.ablations[ablation].variants[variant]
    diff = OmegaConf.to_container(node) if node is not None else None
    return json.dumps([kind, section if kind else None, OmegaConf.to_container(base[section]) if kind else
                       OmegaConf.to_container(base), run, ablation, diff], sort_keys=True, default=str)


def test_every_profile_experiment_and_variant_dry_runs():
    seen: set = set()
    cases = _cases()
    assert len(cases) > 3 * len(EXPERIMENTS) * 10
    planned: set = set()
    for profile, experiment, ablation, variant in cases:
        base = _composed(profile, experiment)
        kind = None if ablation is None else base.ablations[ablation].kind
        key = _section_key(base, ablation, variant, kind)
        if key in planned:
            continue
        planned.add(key)
        cfg = base if ablation is None else variant_config(base, ablation, variant)
        try:
            if kind in (None, "longlora", "longlora_steps"):
                _check_longlora(cfg, seen)
            if kind in (None, "simcse"):
                runs = list(cfg.simcse.runs) if kind is None else [base.ablations[ablation].get("run", "unsup")]
                for run in runs:
                    _check_simcse(cfg, run)
        except AssertionError as exc:
            raise AssertionError(f"profile={profile} experiment={experiment} {ablation}/{variant}: {exc}") from exc


def test_dry_run_fails_on_what_it_can_see():
    from repro.config import ConfigError
    from repro.scale import BatchSplitError

    cfg = OmegaConf.to_container(_composed("paper", None))
    cfg["run"]["devices"] = 3
    with pytest.raises(BatchSplitError, match="global_batch_size=64"):
        longlora_plan(OmegaConf.create(cfg))
    cfg["run"]["devices"] = 8
    cfg["longlora"]["attention"]["group_size_ratio"] = 0.3
    with pytest.raises(ConfigError, match="not divisible by the group size"):
        longlora_plan(OmegaConf.create(cfg))
