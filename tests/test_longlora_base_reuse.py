"""One base model for every fine-tuning context (LongLoRA Table 3 extends one Llama-2): the base's identity
leaves ``longlora.train`` out, and a variant that only changes the context reuses the pipeline's base."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from repro.cli import StageContext
from repro.config import validate
from repro.data.synthetic import generate_documents
from repro.data.tokenizer import build_tokenizer
from repro.schemas import TokenizerConfig
from repro.stages import write_stamp
from repro.workflows import longlora

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def root_cfg(tmp_path):
    cfg = OmegaConf.load(REPO_ROOT / "params.yaml")
    cfg.run.data_dir, cfg.run.model_dir = str(tmp_path / "data"), str(tmp_path / "models")
    cfg.run.metrics_dir = str(tmp_path / "metrics")
    return validate(cfg)


# the context ablation's 256-token variant, as the complete grid (conf/ablations/full.yaml) defines it
CTX256 = OmegaConf.load(REPO_ROOT / "conf" / "ablations" / "full.yaml").longlora_context.variants.ctx256


def _ctx(tmp_path, sweep: bool) -> StageContext:
    return StageContext(out_root=tmp_path / ("variant" if sweep else "."), cache_root=tmp_path / "cache",
                        group="g", sweep=sweep)


def _with(cfg, diff):
    return validate(OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(cfg)), diff))


def test_base_identity_ignores_the_fine_tuning_context_and_schedule(root_cfg, tmp_path):
    main = longlora.Paths.of(root_cfg, _ctx(tmp_path, False))
    ctx256 = longlora.Paths.of(_with(root_cfg, CTX256), _ctx(tmp_path, True))
    assert ctx256.data_fp != main.data_fp  # its training blocks are 256 tokens long ...
    assert ctx256.base_fp == main.base_fp  # ... its base is the pipeline's
    for diff in ({"longlora": {"train": {"max_steps": 7, "lr": 1.0}}}, {"longlora": {"adapter": {"mode": "full"}}}):
        assert longlora.Paths.of(_with(root_cfg, diff), _ctx(tmp_path, False)).base_fp == main.base_fp
    for diff in ({"longlora": {"base": {"pretrain_steps": 10}}}, {"longlora": {"model": {"hidden_size": 32}}},
                 {"seed": 1}, {"longlora": {"data": {"train": {"num_docs": 10}}}},
                 {"longlora": {"data": {"tokenizer": {"vocab_size": 300}}}}):
        assert longlora.Paths.of(_with(root_cfg, diff), _ctx(tmp_path, False)).base_fp != main.base_fp, diff
    assert longlora.base_pretrain_blocks(root_cfg.longlora) == (128, 1500 * 16 * 128)
    assert longlora.base_pretrain_blocks(_with(root_cfg, {"longlora": {"model": {"source": "gguf"}}}).longlora) is None


def test_a_context_variant_reuses_the_pipeline_base_and_checks_its_vocabulary(root_cfg, tmp_path):
    main = longlora.Paths.of(root_cfg, _ctx(tmp_path, False))
    vcfg = _with(root_cfg, CTX256)
    vctx = _ctx(tmp_path, True)
    variant = longlora.Paths.of(vcfg, vctx)
    assert variant.base != main.base  # no stamp yet: its own cache folder
    docs = list(generate_documents(seed=0, num_docs=40))
    build_tokenizer(TokenizerConfig(vocab_size=300), docs).save_pretrained(main.base)
    write_stamp(main.base, main.base_fp)
    variant = longlora.Paths.of(vcfg, vctx)
    assert variant.base == main.base
    build_tokenizer(TokenizerConfig(vocab_size=300), docs).save_pretrained(variant.data / "tokenizer")
    assert longlora.build_base(vcfg, vctx) == main.base  # same vocabulary: reused, nothing trained
    build_tokenizer(TokenizerConfig(vocab_size=280), docs).save_pretrained(variant.data / "tokenizer")
    with pytest.raises(ValueError, match="another vocabulary"):
        longlora.build_base(vcfg, vctx)


def test_a_variant_whose_run_is_the_pipelines_evaluates_the_pipelines_model(tmp_path):
    """S2 (attention ablation) and LoRA+ (LoRA ablation) are the pipeline's own run: same run fingerprint, and
    ``shared_finetuned`` hands them ``models/longlora/finetuned`` once ``longlora_train`` stamped it; any other
    variant, a stale stamp or missing train metrics leave them to train."""
    import json
    import os

    from repro.workflows.ablations import shared_finetuned, variant_config

    # the pipeline's layout: run.*_dir relative to the working directory (here: folders under tmp_path)
    cfg = OmegaConf.load(REPO_ROOT / "params.yaml")
    cfg.run.model_dir, cfg.run.metrics_dir = (os.path.relpath(tmp_path / d) for d in ("models", "metrics"))
    root_cfg = validate(cfg)
    main = longlora.Paths.of(root_cfg, StageContext(out_root=Path("."), cache_root=tmp_path / "cache", group="g",
                                                          sweep=False))
    same = [("longlora_attention", "s2_heads"), ("longlora_lora", "lora_plus")]
    other = [("longlora_attention", "full"), ("longlora_attention", "short"), ("longlora_lora", "lora_r8"),
             ("longlora_lora", "full_ft"), ("longlora_control", "full_attn_full_ft")]
    vctx = StageContext(out_root=tmp_path / "variant", cache_root=tmp_path / "cache", group="g", sweep=True)
    paths = {key: longlora.Paths.of(variant_config(root_cfg, *key), vctx) for key in same + other}
    for key in same:
        assert paths[key].run_fp == main.run_fp, key
        assert shared_finetuned(root_cfg, paths[key]) is None, key  # nothing trained yet
    for key in other:
        assert paths[key].run_fp != main.run_fp, key

    (main.finetuned / "merged").mkdir(parents=True)
    (main.finetuned / "merged" / "config.json").write_text("{}")
    write_stamp(main.finetuned, main.run_fp)
    assert shared_finetuned(root_cfg, paths[same[0]]) is None  # no train metrics beside it
    (Path(root_cfg.run.metrics_dir) / "longlora").mkdir(parents=True)
    (Path(root_cfg.run.metrics_dir) / "longlora" / "train.json").write_text(json.dumps({"train/steps": 1}))
    for key in same:
        assert shared_finetuned(root_cfg, paths[key]).resolve() == main.finetuned.resolve(), key
    for key in other:
        assert shared_finetuned(root_cfg, paths[key]) is None, key
    assert shared_finetuned(root_cfg, main) is None  # the pipeline's run itself is never "shared"
    assert main.finetuned.resolve() == (tmp_path / "models" / "longlora" / "finetuned").resolve()
    write_stamp(main.finetuned, "0" * 16)  # built by another config or code version
    assert shared_finetuned(root_cfg, paths[same[0]]) is None
