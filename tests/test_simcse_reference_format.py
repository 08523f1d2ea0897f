"""SimCSE as the reference trains, scores and ships it: MLP at test time for sup only, untruncated
evaluation encoding, checkpoints in the reference's format both ways (HF export with the MLP as
BERT's pooler; released ``princeton-nlp`` layout loaded with its card's pooler)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from repro.config import validate
from repro.lit.simcse import SimCSECollator, SimCSEModule
from repro.models.sentence_encoder import build_encoder
from repro.models.simcse_export import export_hf, export_sentence_transformers, load_released, released_pooler
from repro.schemas import EncoderConfig, SimCSETrainConfig
from repro.simcse_runs import run_encoder_config, run_train_config
from repro.workflows.simcse import checkpoint_key

WORDS = "the a cat dog sat on mat ran quickly slowly big small red blue house tree over under park".split()
SENTENCES = ["a dog", "the big red house under the tree", "cat sat on the mat", "dog ran over the park quickly"]
LONG = " ".join(WORDS * 3)  # 57 words: far over the training max_length of 32 tokens


@pytest.fixture(scope="module")
def tokenizer_dir(make_wordpiece_dir) -> Path:
    return make_wordpiece_dir(WORDS)


def _cfg(repo_root: Path, **encoder):
    raw = OmegaConf.load(repo_root / "params.yaml")
    return validate(OmegaConf.merge(raw, {"simcse": {"encoder": encoder}}))


def test_sup_run_keeps_the_mlp_at_test_time_and_unsup_drops_it(repo_root, tokenizer_dir):
    cfg = _cfg(repo_root, pooler="cls", mlp_only_train=True)  # as conf/encoder/bert_base.yaml
    assert run_encoder_config(cfg, "unsup").mlp_only_train is True
    assert run_encoder_config(cfg, "sup").mlp_only_train is False
    assert run_train_config(cfg, "sup").mode == "sup"
    outs = {}
    for run in ("unsup", "sup"):
        enc_cfg = run_encoder_config(cfg, run)
        enc_cfg.tokenizer_path, enc_cfg.source = str(tokenizer_dir), "tiny"
        torch.manual_seed(0)
        enc = build_encoder(enc_cfg).eval()
        batch = enc.tokenize(SENTENCES)
        with torch.no_grad():
            cls_state = enc.backbone(**batch).last_hidden_state[:, 0]
            head = torch.tanh(cls_state @ enc.mlp.dense.weight.T + enc.mlp.dense.bias)
        outs[run] = (enc.encode(SENTENCES), cls_state, head)
    torch.testing.assert_close(outs["unsup"][0], outs["unsup"][1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["sup"][0], outs["sup"][2], atol=1e-5, rtol=1e-5)
    with pytest.raises(Exception, match="simcse.runs.sup.encoder"):
        run_encoder_config(OmegaConf.merge(cfg, {"simcse": {"runs": {"sup": {"encoder": {"poolr": "cls"}}}}}), "sup")


def test_evaluation_does_not_truncate_but_training_does(tokenizer_dir):
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(source="tiny", tokenizer_path=str(tokenizer_dir), pooler="avg",
                                      max_length=32, max_position_embeddings=128)).eval()
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    full = tok([LONG], return_tensors="pt")  # independent: the whole sentence, no truncation
    assert full["input_ids"].shape[1] > 32
    with torch.no_grad():
        states = enc.backbone(**full).last_hidden_state
        expected = states.mean(dim=1)  # one unpadded sentence: the plain mean is the masked mean
        truncated = enc.backbone(**tok([LONG], truncation=True, max_length=32, return_tensors="pt"))
    got = enc.encode([LONG])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - truncated.last_hidden_state.mean(dim=1)).abs().max() > 1e-3
    assert enc.eval_max_length == 128
    train_batch = SimCSECollator(enc.tokenizer, enc.cfg.max_length)([LONG])
    assert train_batch["input_ids"].shape[-1] == 32


def _trained_tiny(tokenizer_dir, steps: int = 3):
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(source="tiny", tokenizer_path=str(tokenizer_dir), pooler="cls",
                                      mlp_only_train=False, dropout=0.1))
    module = SimCSEModule(enc, SimCSETrainConfig(lr=1e-2, max_steps=steps))
    opt = module.configure_optimizers()["optimizer"]
    batch = SimCSECollator(enc.tokenizer, 32)(SENTENCES * 2)
    for _ in range(steps):
        loss = module.compute_loss(module.embed_batch(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return enc.eval()


def test_export_maps_mlp_onto_the_pooler_and_round_trips(tokenizer_dir, tmp_path):
    enc = _trained_tiny(tokenizer_dir)
    ours = enc.encode(SENTENCES)
    out = export_hf(enc, tmp_path / "hf")
    hf = AutoModel.from_pretrained(str(out)).eval()  # what the reference's evaluation.py loads
    assert hf.pooler is not None and hf.config.simcse_pooler == "cls"
    torch.testing.assert_close(hf.pooler.dense.weight, enc.mlp.dense.weight)
    batch = enc.tokenize(SENTENCES)
    with torch.no_grad():
        pooled = hf(**batch).pooler_output  # --pooler cls
        cls_before = hf(**batch).last_hidden_state[:, 0]  # --pooler cls_before_pooler
    order = torch.tensor([SENTENCES.index(s) for s in SENTENCES])
    torch.testing.assert_close(pooled[order], ours, atol=1e-5, rtol=1e-5)
    reloaded = load_released(str(out), pooler="cls")  # our evaluator reading the export
    assert torch.equal(reloaded.encode(SENTENCES), ours)
    assert torch.equal(load_released(str(out), pooler="cls_before_pooler").encode(SENTENCES), cls_before)
    st = pytest.importorskip("sentence_transformers")
    st_dir = export_sentence_transformers(enc, out_dir=tmp_path / "st")
    got = st.SentenceTransformer(str(st_dir), device="cpu").encode(SENTENCES + [LONG], convert_to_tensor=True)
    torch.testing.assert_close(got.cpu(), enc.encode(SENTENCES + [LONG]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("name", "pooler"), [("sup-simcse-bert-tiny", "cls"), ("unsup-simcse-bert-tiny",
                                                                                "cls_before_pooler")])
def test_released_layout_loads_with_the_pooler_its_card_names(tokenizer_dir, tmp_path, name, pooler):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(1)
    bert = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64), add_pooling_layer=True).eval()
    folder = tmp_path / name
    bert.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    assert released_pooler(f"princeton-nlp/{name}") == pooler
    enc = load_released(str(folder))
    assert enc.cfg.pooler == pooler and enc.backbone.pooler is None
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = bert(**batch)
    expected = out.pooler_output if pooler == "cls" else out.last_hidden_state[:, 0]
    torch.testing.assert_close(enc.encode(SENTENCES), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="pooler"):
        released_pooler("bert-base-uncased")


def test_checkpoint_folder_changes_with_lr_and_not_with_run_name_only(repo_root):
    cfg = _cfg(repo_root)
    base = checkpoint_key(cfg, "unsup", "data0")
    assert base == checkpoint_key(cfg, "unsup", "data0")
    assert base != checkpoint_key(OmegaConf.merge(cfg, {"simcse": {"train": {"lr": 0.5}}}), "unsup", "data0")
    assert base != checkpoint_key(cfg, "unsup", "data1")
    assert base.startswith("unsup-")


def test_eval_avg_sts_selects_on_the_mean_of_stsb_and_sickr_dev(tokenizer_dir, tmp_path):
    import lightning as L

    from repro.lit.simcse import SimCSEDataModule, build_callbacks, build_trainer_kwargs

    # step:        2     4     6      STS-B dev alone would pick step 2; the mean picks step 4
    stsb = iter([0.9, 0.5, 0.1])
    sick = iter([0.1, 0.8, 0.1])
    cfg = SimCSETrainConfig(lr=1e-3, batch_size=4, max_steps=6, eval_every_n_steps=2, eval_avg_sts=True)
    torch.manual_seed(0)
    enc = build_encoder(EncoderConfig(source="tiny", tokenizer_path=str(tokenizer_dir), pooler="avg"))
    module = SimCSEModule(enc, cfg, lambda f: {"stsb_dev_spearman": next(stsb), "sickr_dev_spearman": next(sick)})
    callbacks = build_callbacks(tmp_path / "ckpt", cfg)
    trainer = L.Trainer(**build_trainer_kwargs(cfg), accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks)
    trainer.fit(module, datamodule=SimCSEDataModule(SENTENCES * 4, enc.tokenizer, 32, cfg))
    assert Path(callbacks[0].best_model_path).name == "best-step=4.ckpt"
    assert callbacks[0].best_model_score.item() == pytest.approx((0.5 + 0.8) / 2)
    assert trainer.gradient_clip_val == 1.0  # simcse.train.gradient_clip_val: HF Trainer's max_grad_norm default


def test_prepared_data_has_sickr_dev_for_avg_sts(tmp_path):
    from repro.data.simcse_data import prepare_simcse_data
    from repro.evaluation.sts import STSEvaluator

    prepare_simcse_data({"source": "synthetic", "n_sentences": 50, "n_triplets": 20, "n_sts_pairs": 10}, tmp_path)
    ev = STSEvaluator.from_dir(tmp_path / "sts", layout="tsv", tasks=["sickr"], with_sick_dev=True)
    assert set(ev.tasks["sickr"]) == {"trial", "test"}
