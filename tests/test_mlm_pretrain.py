"""MLM pretraining of the tiny SimCSE encoder: the blocks, the masks, the module, and ``init_from``.

The packing is checked against a token-by-token rebuild, the masks against BERT's 15% / 80-10-10 rule
over many positions, the resumed stream against an uninterrupted one, and the pretrained weights against
what ``build_encoder(init_from=...)`` loads.
"""

from __future__ import annotations

from dataclasses import replace

import lightning as L
import pytest
import torch
from transformers import AutoTokenizer, BertForMaskedLM

from repro.data.mlm_data import MaskedBlocks, pack_sentences
from repro.lit.causal_lm import MaskedLMModule, PackedBlocksDataModule, build_trainer, fit_resumable
from repro.models.sentence_encoder import build_encoder
from repro.schemas import EncoderConfig, SimCSEPretrainConfig, TrainConfig


@pytest.fixture(scope="module")
def tok(make_wordpiece_dir, make_sentences):
    return AutoTokenizer.from_pretrained(make_wordpiece_dir(make_sentences.words))


def test_pack_sentences_is_cls_then_the_sep_joined_stream(tok, make_sentences):
    sents = make_sentences(40, 1)
    blocks = pack_sentences(sents, tok, 9)
    stream = []
    for s in sents:  # independent rebuild: every word is one WordPiece token of the fixture vocabulary
        stream += [tok.convert_tokens_to_ids(w) for w in s.split()] + [tok.sep_token_id]
    n = len(stream) // 8
    assert blocks.shape == (n, 9)
    assert (blocks[:, 0] == tok.cls_token_id).all()
    assert blocks[:, 1:].reshape(-1).tolist() == stream[: n * 8]
    with pytest.raises(ValueError, match="fewer than one MLM block"):
        pack_sentences(["the cat"], tok, 9)


def test_masks_follow_bert_and_are_fixed_by_the_stream_position(tok, make_sentences):
    blocks = pack_sentences(make_sentences(400, 2), tok, 16)
    data = MaskedBlocks(blocks, tok, length=4000, seed=5, mask_prob=0.15)
    special = set(tok.all_special_ids)
    chosen = masked = swapped = kept = eligible = 0
    for p in range(0, 4000, 2):
        item = data[p]
        ids = blocks[p % len(blocks)]
        lab, inp = item["labels"].numpy(), item["input_ids"].numpy()
        sel = lab != -100
        assert (lab[sel] == ids[sel]).all()  # labels: the original tokens at the chosen positions only
        assert not any(int(t) in special for t in ids[sel])  # [CLS] / [SEP] are never chosen
        assert (inp[~sel] == ids[~sel]).all()  # unchosen positions are untouched
        eligible += int(sum(int(t) not in special for t in ids))
        chosen += int(sel.sum())
        masked += int((inp[sel] == tok.mask_token_id).sum())
        kept += int((inp[sel] == ids[sel]).sum())
        swapped += int(((inp[sel] != tok.mask_token_id) & (inp[sel] != ids[sel])).sum())
    assert chosen / eligible == pytest.approx(0.15, abs=0.01)
    assert masked / chosen == pytest.approx(0.8, abs=0.02)
    assert swapped / chosen == pytest.approx(0.1, abs=0.02) and kept / chosen == pytest.approx(0.1, abs=0.02)
    # a position always gets the same mask; the same block at another position gets a fresh one
    assert torch.equal(data[7]["input_ids"], data[7]["input_ids"])
    again = data[7 + len(blocks)]
    assert not torch.equal(data[7]["labels"], again["labels"])
    other_seed = MaskedBlocks(blocks, tok, length=4000, seed=6)
    assert not torch.equal(data[7]["labels"], other_seed[7]["labels"])


def _fit(tok, blocks, ckpt, steps, kill_at=None):
    cfg = TrainConfig(context_length=blocks.shape[1], max_steps=steps, batch_size=8, grad_accum=1, lr=3e-3,
                      warmup_steps=2, seed=1, log_every_n_steps=1, ckpt_every_n_steps=2)
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(source="tiny", tokenizer_path=tok.name_or_path, hidden_size=32,
                                      intermediate_size=64, pooler="avg"))
    model = BertForMaskedLM(enc.backbone.config)
    model.bert.load_state_dict(enc.backbone.state_dict())
    module = MaskedLMModule(model, cfg)
    callbacks = []
    if kill_at is not None:
        class Kill(L.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step == kill_at:
                    raise RuntimeError("killed")
        callbacks.append(Kill())
    trainer = build_trainer(cfg, ckpt, callbacks=callbacks, accelerator="cpu", progress=False)
    data = PackedBlocksDataModule(cfg, dataset=MaskedBlocks(blocks, tok, length=steps * 8, seed=1))
    fit_resumable(trainer, module, data, ckpt)
    return model


def test_mlm_lowers_the_loss_and_resumes_bit_exact(tok, make_sentences, tmp_path):
    blocks = pack_sentences(make_sentences(300, 3), tok, 12)
    model = _fit(tok, blocks, tmp_path / "a", steps=12)
    with pytest.raises(RuntimeError, match="killed"):
        _fit(tok, blocks, tmp_path / "b", steps=12, kill_at=5)
    resumed = _fit(tok, blocks, tmp_path / "b", steps=12)
    for (name, a), (_, b) in zip(model.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    # the objective is learnt: held-out MLM loss of the trained model below the untrained one's
    held = MaskedBlocks(pack_sentences(make_sentences(100, 9), tok, 12), tok, length=64, seed=99)
    batch = {k: torch.stack([held[i][k] for i in range(64)]) for k in ("input_ids", "labels")}
    fresh = BertForMaskedLM(model.config)
    with torch.no_grad():
        assert model(**batch).loss < fresh(**batch).loss


def test_init_from_loads_the_pretrained_weights_and_checks_the_architecture(tok, tmp_path):
    base = EncoderConfig(source="tiny", tokenizer_path=tok.name_or_path, hidden_size=32, intermediate_size=64,
                         pooler="avg")
    torch.manual_seed(1)
    saved = build_encoder(base).backbone
    saved.save_pretrained(tmp_path / "pre")
    torch.manual_seed(2)  # another seed: a randomly initialised backbone would differ
    loaded = build_encoder(replace(base, init_from=str(tmp_path / "pre"), dropout=0.2)).backbone
    for (name, a), (_, b) in zip(saved.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert loaded.config.hidden_dropout_prob == 0.2  # the run's own dropout over the pretrained weights
    with pytest.raises(ValueError, match="hidden_size is 32, the encoder config's is 64"):
        build_encoder(replace(base, hidden_size=64, intermediate_size=64, init_from=str(tmp_path / "pre")))
    with pytest.raises(FileNotFoundError, match="simcse_pretrain"):
        build_encoder(replace(base, init_from=str(tmp_path / "nothing")))
    with pytest.raises(ValueError, match="init_from applies to source 'tiny' only"):
        EncoderConfig(source="package", init_from=str(tmp_path / "pre"))


def test_pretrain_config_names_bad_keys():
    with pytest.raises(ValueError, match="simcse.pretrain.mask_prob"):
        SimCSEPretrainConfig(mask_prob=1.5)
    with pytest.raises(ValueError, match="simcse.pretrain.batch_size"):
        SimCSEPretrainConfig(batch_size=0)


def test_every_seed_and_variant_of_one_architecture_shares_the_pretrained_encoder():
    """The ablations' per-seed configs (root seed, simcse.train.seed, dropout) reuse the pipeline's MLM weights."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from repro.workflows.simcse import pretrain_fingerprint

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "params.yaml")
    base = pretrain_fingerprint(cfg, "data")
    seeded = OmegaConf.merge(cfg, {"seed": 43, "simcse": {"train": {"seed": 43}, "encoder": {"dropout": 0.0}}})
    assert pretrain_fingerprint(seeded, "data") == base
    for diff in ({"simcse": {"pretrain": {"steps": 7}}}, {"simcse": {"encoder": {"hidden_size": 32}}},
                 {"simcse": {"pretrain": {"seed": 1}}}):
        assert pretrain_fingerprint(OmegaConf.merge(cfg, diff), "data") != base, diff
    assert pretrain_fingerprint(cfg, "other data") != base
