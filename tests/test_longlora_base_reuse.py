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
