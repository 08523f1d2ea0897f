"""SimCSEModule: loss wiring, learning on a fixed batch, dev-eval cadence, best checkpoint, resume."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from repro.lit.simcse import SimCSECollator, SimCSEDataModule, SimCSEModule, build_callbacks, build_trainer_kwargs
from repro.losses import info_nce
from repro.models.sentence_encoder import build_encoder
from repro.schemas import EncoderConfig, SimCSETrainConfig


@pytest.fixture(scope="module")
def tokenizer_dir(make_wordpiece_dir, make_sentences) -> Path:
    return make_wordpiece_dir(make_sentences.words)


def _encoder(tokenizer_dir, **overrides):
    torch.manual_seed(0)
    return build_encoder(EncoderConfig(source="tiny", tokenizer_path=str(tokenizer_dir), **overrides))


def test_collator_pads_to_batch_max_and_truncates(tokenizer_dir):
    enc = _encoder(tokenizer_dir)
    triplets = [("a dog", "the big red house under the tree over the park", "cat"), ("man", "woman", "tree")]
    batch = SimCSECollator(enc.tokenizer, max_length=6)(triplets)
    assert batch["input_ids"].shape == (2, 3, 6)
    direct = enc.tokenizer([s for t in triplets for s in t], padding=True, truncation=True, max_length=6)
    assert batch["input_ids"].reshape(6, -1).tolist() == direct["input_ids"]
    assert batch["attention_mask"][0, 0].tolist() == [1, 1, 1, 1, 0, 0]
    with pytest.raises(ValueError, match="batch item 1"):
        SimCSECollator(enc.tokenizer, 6)([("a", "b"), ("a",)])


def test_unsup_loss_equals_info_nce_of_encoder_outputs(tokenizer_dir, make_sentences):
    enc = _encoder(tokenizer_dir, dropout=0.0)
    module = SimCSEModule(enc, SimCSETrainConfig(temperature=0.1))
    sents = make_sentences(8)
    batch = SimCSECollator(enc.tokenizer, 32)(sents)
    loss = module.compute_loss(module.embed_batch(batch))
    tok = enc.tokenizer(sents, padding=True, return_tensors="pt")
    emb = enc(tok["input_ids"], tok["attention_mask"])  # no dropout: both views equal this
    torch.testing.assert_close(loss, info_nce(emb, emb, 0.1), atol=1e-5, rtol=1e-5)


def test_sup_loss_uses_hard_negatives(tokenizer_dir, make_sentences):
    enc = _encoder(tokenizer_dir, dropout=0.0)
    module = SimCSEModule(enc, SimCSETrainConfig(mode="sup", hard_negative_weight=0.5))
    s0, s1, s2 = make_sentences(6, 1), make_sentences(6, 2), make_sentences(6, 3)
    batch = SimCSECollator(enc.tokenizer, 32)(list(zip(s0, s1, s2, strict=True)))
    loss = module.compute_loss(module.embed_batch(batch))
    e = [enc(**enc.tokenize(s)) for s in (s0, s1, s2)]
    torch.testing.assert_close(loss, info_nce(e[0], e[1], 0.05, e[2], 0.5), atol=1e-5, rtol=1e-5)


def test_loss_decreases_on_a_fixed_batch(tokenizer_dir, make_sentences):
    # mean pooling: a randomly initialised 2-layer model's CLS state is nearly the same for every
    # sentence, so CLS pooling needs far more than a few steps to separate them
    enc = _encoder(tokenizer_dir, dropout=0.1, pooler="avg")
    module = SimCSEModule(enc, SimCSETrainConfig(lr=1e-3, max_steps=30))
    optimizer = module.configure_optimizers()["optimizer"]
    batch = SimCSECollator(enc.tokenizer, 32)(make_sentences(16))
    losses = []
    for _ in range(20):
        loss = module.compute_loss(module.embed_batch(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3


def test_dev_eval_cadence_best_checkpoint_and_resume(tokenizer_dir, tmp_path, make_sentences):
    enc = _encoder(tokenizer_dir)
    dev_sentences = make_sentences(5, 9)
    scores = iter([0.1, 0.5, 0.3, 0.2, 0.2, 0.2])
    calls: list[int] = []

    def dev_eval(encode_fn):
        emb = encode_fn(dev_sentences)
        assert emb.shape == (5, 64)
        calls.append(module.global_step)
        return {"spearman": next(scores), "align": 0.4}

    cfg = SimCSETrainConfig(lr=1e-3, batch_size=8, max_steps=6, eval_every_n_steps=2, seed=0)
    module = SimCSEModule(enc, cfg, dev_eval=dev_eval)
    data = SimCSEDataModule(make_sentences(40), enc.tokenizer, 32, cfg)

    def trainer(max_steps):
        kwargs = build_trainer_kwargs(cfg) | {"max_steps": max_steps}
        return L.Trainer(
            **kwargs,
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=build_callbacks(tmp_path / "ckpt"),
        )

    first = trainer(6)
    first.fit(module, datamodule=data)
    assert calls == [2, 4, 6]
    best = first.checkpoint_callback
    assert best.best_model_score.item() == pytest.approx(max([0.1, 0.5, 0.3]))
    assert Path(best.best_model_path).name == "best-step=4.ckpt"
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()
    assert first.callback_metrics["eval/align"].item() == pytest.approx(0.4)
    for key in ("train/loss", "train/lr", "train/sentences_per_s", "train/peak_mem_mb"):
        assert key in first.callback_metrics, key

    second = trainer(8)
    second.fit(module, datamodule=data, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    # resumed at step 6, not from scratch (Lightning reruns the validation last.ckpt was saved in)
    assert calls[:3] == [2, 4, 6] and calls[-1] == 8 and set(calls[3:]) <= {6, 8}
    assert module.global_step == 8
    assert Path(second.checkpoint_callback.best_model_path).name == "best-step=4.ckpt"


def test_config_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        SimCSETrainConfig(mode="semi")
