"""LongLoRA data: sources, tokenizer, packing, token streams, checksummed cache, PackedBlocks."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from repro.data import lm_data
from repro.data.lm_data import (
    PackedBlocks,
    lm_data_config_from_dict,
    load_array,
    pack_documents,
    prepare_lm_data,
    token_stream,
    write_array,
)
from repro.data.synthetic import generate_documents
from repro.data.text_sources import HubSource, LocalSource, build_source
from repro.data.tokenizer import build_tokenizer, token_dtype_for
from repro.schemas import LMDataConfig, SourceConfig, TokenizerConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def bpe():
    return build_tokenizer(TokenizerConfig(vocab_size=400), generate_documents(seed=0, num_docs=60))


def _tiny_cfg(**over) -> LMDataConfig:
    cfg = LMDataConfig(
        train=SourceConfig(kind="synthetic", seed=0, num_docs=30),
        eval_sets={"heldout": SourceConfig(kind="synthetic", seed=9, num_docs=4)},
        tokenizer=TokenizerConfig(vocab_size=400),
    )
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


# ---------------------------------------------------------------- packing and streams


def _joined(lists, eos):
    flat = []
    for i, d in enumerate(lists):
        if i:
            flat.append(eos)
        flat.extend(int(t) for t in d)
    return flat


def test_pack_documents_equals_direct_concatenation_and_cut():
    rng = np.random.default_rng(0)
    lists = [rng.integers(1, 50, size=rng.integers(1, 30)).tolist() for _ in range(20)]
    flat = _joined(lists, eos=0)
    blocks = pack_documents(lists, block_size=16, eos_id=0)
    expected = [flat[i : i + 16] for i in range(0, len(flat) - 15, 16)]
    assert blocks.shape == (len(flat) // 16, 16)
    assert blocks.tolist() == expected
    capped = pack_documents(lists, block_size=16, eos_id=0, max_tokens=50)
    assert capped.tolist() == [flat[:16], flat[16:32], flat[32:48]]


def test_pack_documents_too_few_tokens_says_how_many():
    with pytest.raises(ValueError, match=r"7 available, 16 needed"):
        pack_documents([[1, 2, 3], [4, 5, 6]], block_size=16, eos_id=0)


def test_packed_blocks_have_no_padding(bpe):
    docs = list(generate_documents(seed=2, num_docs=10))
    lists = [bpe(d, add_special_tokens=False)["input_ids"] for d in docs]
    blocks = pack_documents(lists, 64, bpe.eos_token_id)
    assert bpe.pad_token_id not in blocks
    kept = blocks.size
    assert kept == (sum(map(len, lists)) + len(lists) - 1) // 64 * 64
    assert (blocks == bpe.eos_token_id).sum() == _joined(lists, -1)[:kept].count(-1)


def test_token_stream_concatenates_with_eos_between(bpe):
    docs = ["the old stone rests .", "The pass key is 12345.", "remember , the code"]
    ids = [bpe(d, add_special_tokens=False)["input_ids"] for d in docs]
    stream = token_stream(docs, bpe)
    assert stream.tolist() == _joined(ids, bpe.eos_token_id)
    assert stream[-1] != bpe.eos_token_id
    two = len(ids[0]) + 1 + len(ids[1])
    for cap, n_docs in ((1, 1), (len(ids[0]), 1), (two - 1, 1), (two, 2), (two + 1, 2), (10**6, 3)):
        # a cap keeps whole documents only (the first one always, however long)
        assert token_stream(docs, bpe, max_tokens=cap).tolist() == _joined(ids[:n_docs], bpe.eos_token_id)


def test_sampled_stream_keeps_long_documents_drawn_at_random(bpe):
    docs = [" ".join(["the old stone rests ."] * k) for k in (1, 30, 2, 40, 50, 3, 60)]
    ids = [bpe(d, add_special_tokens=False)["input_ids"] for d in docs]
    threshold = len(ids[1])  # documents 1, 3, 4 and 6 qualify
    long_ids = [i for i, t in enumerate(ids) if len(t) >= threshold]
    assert long_ids == [1, 3, 4, 6]
    stream = token_stream(docs, bpe, min_doc_tokens=threshold, sample_docs=2, sample_seed=5)
    import random as _random

    drawn = sorted(_random.Random(5).sample(long_ids, 2))
    assert stream.tolist() == _joined([ids[i] for i in drawn], bpe.eos_token_id)
    assert token_stream(docs, bpe, min_doc_tokens=threshold, sample_docs=10).tolist() == _joined(
        [ids[i] for i in long_ids], bpe.eos_token_id)  # fewer qualify than asked: all are kept
    with pytest.raises(ValueError, match="min_doc_tokens=100000"):
        token_stream(docs, bpe, min_doc_tokens=100_000)


def test_roles_must_name_eval_sets():
    sets = {"books_val": SourceConfig(), "books_test": SourceConfig()}
    assert LMDataConfig(eval_sets=sets, roles={"pg19_validation": "books_val"}).roles["pg19_validation"] == "books_val"
    with pytest.raises(ValueError, match="roles.pg19_test='nope' names no entry"):
        LMDataConfig(eval_sets=sets, roles={"pg19_test": "nope"})
    with pytest.raises(ValueError, match="'pg19_valid' is not one of"):
        LMDataConfig(eval_sets=sets, roles={"pg19_valid": "books_val"})


def test_local_shards_split_a_folder_into_disjoint_sets(tmp_path):
    from repro.data.text_sources import LocalSource

    for i in range(5):
        (tmp_path / f"b{i}.txt").write_text(f"book {i}")
    val = LocalSource(SourceConfig(kind="local", path=str(tmp_path), num_shards=2, shard_index=0))
    test = LocalSource(SourceConfig(kind="local", path=str(tmp_path), num_shards=2, shard_index=1))
    assert [p.name for p in val.files()] == ["b0.txt", "b2.txt", "b4.txt"]
    assert [p.name for p in test.files()] == ["b1.txt", "b3.txt"]
    assert list(test) == ["book 1", "book 3"]  # whole files
    with pytest.raises(ValueError, match="shard_index=2 must lie in"):
        SourceConfig(num_shards=2, shard_index=2)


# ---------------------------------------------------------------- tokenizer


def test_bpe_round_trip_single_digits_and_save_load(bpe, tmp_path):
    text = "The pass key is 90817. Remember it. the quiet house waits — ünïcode 42"
    ids = bpe(text, add_special_tokens=False)["input_ids"]
    assert bpe.decode(ids) == text
    digit_ids = bpe("1234567890", add_special_tokens=False)["input_ids"]
    assert bpe.convert_ids_to_tokens(digit_ids) == list("1234567890")
    assert len({bpe.bos_token_id, bpe.eos_token_id, bpe.pad_token_id, bpe.unk_token_id}) == 4
    bpe.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text, add_special_tokens=False)["input_ids"] == ids
    assert (again.eos_token, again.pad_token, again.bos_token) == ("<eos>", "<pad>", "<bos>")
    pre = build_tokenizer(TokenizerConfig(kind="pretrained", name_or_path=str(tmp_path)))
    assert pre(text, add_special_tokens=False)["input_ids"] == ids
    via_model = build_tokenizer(TokenizerConfig(kind="pretrained"), model_name_or_path=str(tmp_path))
    assert via_model(text, add_special_tokens=False)["input_ids"] == ids


def test_tokenizer_config_errors():
    with pytest.raises(ValueError, match="vocab_size=100"):
        build_tokenizer(TokenizerConfig(vocab_size=100), ["abc"])
    with pytest.raises(ValueError, match="name_or_path is null"):
        build_tokenizer(TokenizerConfig(kind="pretrained"))
    with pytest.raises(ValueError, match="'wordpiece'"):
        build_tokenizer(TokenizerConfig(kind="wordpiece"), ["abc"])


def test_token_dtype_follows_vocabulary_size():
    class Fake:
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

    assert token_dtype_for(Fake(65536)) == np.uint16
    assert token_dtype_for(Fake(65537)) == np.uint32


# ---------------------------------------------------------------- sources


def _gutenberg(body: str, star_space: str = " ") -> str:
    return (
        "\ufeffThe Project Gutenberg eBook of Nothing\r\nLicence words here.\r\n\r\n"
        f"***{star_space}START OF THIS PROJECT GUTENBERG EBOOK NOTHING ***\r\n\r\n{body}\r\n\r\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK NOTHING ***\r\nFull licence follows.\r\n"
    )


def test_local_source_strips_gutenberg_header_and_licence(tmp_path):
    body = "CHAPTER I.\r\nIt was a dark night.\r\nThe end."
    (tmp_path / "a.txt").write_text(_gutenberg(body), encoding="utf-8", newline="")
    (tmp_path / "b.txt").write_text(_gutenberg(body, star_space=""), encoding="utf-8", newline="")
    (tmp_path / "c.tex").write_text("\\section{X} no markers", encoding="utf-8")
    (tmp_path / "skip.tsv").write_text("not a document", encoding="utf-8")
    docs = list(LocalSource(SourceConfig(kind="local", path=str(tmp_path))))
    assert docs == [body, body, "\\section{X} no markers"]
    kept = list(LocalSource(SourceConfig(kind="local", path=str(tmp_path / "a.txt"), strip_gutenberg=False)))
    assert kept[0].startswith("The Project Gutenberg") and "Full licence" in kept[0]


def test_local_source_reads_real_books(shared_data):
    index = (shared_data / "books" / "index.tsv").read_text(encoding="utf-8").splitlines()
    rows = [dict(zip(index[0].split("\t"), line.split("\t"), strict=False)) for line in index[1:]]
    small = sorted(rows, key=lambda r: int(r["bytes"]))[:2]
    for row in small:
        cfg = SourceConfig(kind="local", path=str(shared_data / "books" / row["file"]))
        (doc,) = list(build_source(cfg))
        lines = (shared_data / "books" / row["file"]).read_text(encoding="utf-8-sig").splitlines()
        start, end = int(row["start_marker_line"]), int(row["end_marker_line"])  # 1-based marker lines
        expected = "\n".join(lines[start : end - 1]).strip("\r\n")
        assert doc.replace("\r\n", "\n") == expected
        assert "START OF" not in doc[:500] and "END OF THIS" not in doc[-500:]
    all_docs = list(build_source(SourceConfig(kind="local", path=str(shared_data / "books"), glob="*.txt")))
    assert len(all_docs) == len(rows)


def test_local_source_reads_real_jsonl_and_tex(shared_data):
    jsonl = shared_data / "mixed" / "redpajama_like_sample.jsonl"
    lines = [json.loads(x) for x in jsonl.read_text(encoding="utf-8").splitlines() if x.strip()]
    docs = list(build_source(SourceConfig(kind="local", path=str(jsonl), max_docs=5)))
    assert docs == [r["text"] for r in lines[:5]]
    math_cfg = SourceConfig(kind="local", path=str(shared_data / "math"), glob="**/*.tex", max_docs=3)
    tex = list(build_source(math_cfg))
    assert len(tex) == 3 and all("\\" in d for d in tex)


def test_local_source_errors_name_the_culprit(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        LocalSource(SourceConfig(kind="local", path=str(tmp_path / "nowhere")))
    empty_dir = tmp_path / "emptydir"
    empty_dir.mkdir()
    with pytest.raises(FileNotFoundError, match="emptydir"):
        list(LocalSource(SourceConfig(kind="local", path=str(empty_dir))))
    (tmp_path / "blank.txt").write_text("  \n")
    with pytest.raises(ValueError, match=r"blank\.txt is empty"):
        list(LocalSource(SourceConfig(kind="local", path=str(tmp_path / "blank.txt"))))
    (tmp_path / "d.jsonl").write_text('{"text": "a"}\n\n{"body": "b"}\n')
    with pytest.raises(KeyError, match=r"d\.jsonl:3: missing text field 'text'"):
        list(LocalSource(SourceConfig(kind="local", path=str(tmp_path / "d.jsonl"))))


def test_undecodable_bytes_strict_and_replace(tmp_path):
    good = "caf\u00e9 ok ".encode()
    data = good + b"\xff\xfe tail \xc3"
    bad_offset = len(good)
    (tmp_path / "bad.txt").write_bytes(data)
    with pytest.raises(ValueError, match=rf"bad\.txt: not valid UTF-8 at byte offset {bad_offset}"):
        list(LocalSource(SourceConfig(kind="local", path=str(tmp_path / "bad.txt"))))
    cfg = SourceConfig(kind="local", path=str(tmp_path / "bad.txt"), errors="replace")
    with pytest.warns(UserWarning, match=rf"replaced 3 undecodable.*offset {bad_offset}"):
        (doc,) = list(LocalSource(cfg))
    assert doc == data.decode("utf-8", errors="replace")


def test_hub_source_streams_with_the_configured_arguments(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return iter([{"text": f"doc {i}", "meta": {}} for i in range(10)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = SourceConfig(kind="hub", hub_name="emozilla/pg19-test", hub_split="test", max_docs=3)
    assert list(build_source(cfg)) == ["doc 0", "doc 1", "doc 2"]
    assert calls[-1] == (("emozilla/pg19-test", None), {"split": "test", "streaming": False})
    files = "hf://datasets/togethercomputer/RedPajama-Data-1T-Sample/*.jsonl"
    cfg = SourceConfig(kind="hub", hub_name="json", hub_data_files=files, hub_config=None, streaming=True)
    assert len(list(HubSource(cfg))) == 10
    assert calls[-1][1] == {"split": "train", "streaming": True, "data_files": files}
    with pytest.raises(KeyError, match=r"row 0: no text field 'content'"):
        list(HubSource(SourceConfig(kind="hub", hub_name="x/y", text_field="content")))
    with pytest.raises(ValueError, match="hub_name"):
        build_source(SourceConfig(kind="hub"))
    with pytest.raises(ValueError, match="'ftp'"):
        build_source(SourceConfig(kind="ftp"))


REDPAJAMA_SUBSETS = ("arxiv", "book", "c4", "cc_2019-30", "cc_2020-05", "cc_2021-04", "cc_2022-05", "cc_2023-06",
                     "github", "stackexchange", "wikipedia")


def _redpajama_sample_folder(root):
    """RedPajama-Data-1T-Sample's layout: one ``<subset>_sample.jsonl`` per subset, rows {text, meta}."""
    folder = root / "RedPajama-Data-1T-Sample"
    folder.mkdir()
    for subset in REDPAJAMA_SUBSETS:
        rows = [{"text": f"{subset} document {i}", "meta": json.dumps({"source": subset, "id": i})} for i in range(40)]
        (folder / f"{subset}_sample.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def test_redpajama_layout_offline_all_subsets_before_the_cap(tmp_path, bpe):
    folder = _redpajama_sample_folder(tmp_path)
    cfg = SourceConfig(kind="hub", hub_name="json", hub_data_files=str(folder / "*.jsonl"), text_field="text",
                       shuffle_seed=0)
    docs = list(HubSource(cfg))
    assert len(docs) == 40 * len(REDPAJAMA_SUBSETS)
    first = {d.split(" ")[0] for d in docs[:60]}  # what a cap of ~60 documents would keep
    assert first == set(REDPAJAMA_SUBSETS)
    in_file_order = list(HubSource(SourceConfig(kind="hub", hub_name="json", hub_data_files=str(folder / "*.jsonl"))))
    assert {d.split(" ")[0] for d in in_file_order[:60]} == {"arxiv", "book"}  # the bias the shuffle removes
    assert docs == list(HubSource(cfg))  # seeded


def test_pg19_and_proof_pile_layouts_offline(tmp_path, bpe):
    import datasets

    pg19 = tmp_path / "pg19-test" / "data"
    pg19.mkdir(parents=True)
    rows = {"short_book_title": ["A", "B"], "publication_date": [1900, 1901], "url": ["u1", "u2"],
            "text": ["first book text .", "second book text ."]}
    datasets.Dataset.from_dict(rows).to_parquet(str(pg19 / "test-00000-of-00001.parquet"))
    got = list(HubSource(SourceConfig(kind="hub", hub_name=str(pg19.parent), hub_split="test")))
    assert got == rows["text"]
    proof = tmp_path / "proof-pile" / "test"
    proof.mkdir(parents=True)
    import gzip

    with gzip.open(proof / "proofpile_test.jsonl.gz", "wt") as f:
        for i in range(3):
            f.write(json.dumps({"text": f"\\begin{{proof}} {i} \\end{{proof}}", "meta": {"config": "arxiv"}}) + "\n")
    cfg = SourceConfig(kind="hub", hub_name="json", hub_data_files=str(proof / "*.jsonl.gz"))
    assert list(HubSource(cfg)) == [f"\\begin{{proof}} {i} \\end{{proof}}" for i in range(3)]


# ---------------------------------------------------------------- prepare + cache


def test_prepare_writes_blocks_streams_and_sidecars(tmp_path):
    cfg = _tiny_cfg()
    out = prepare_lm_data(cfg, tmp_path, context_length=64)
    tok = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    docs = generate_documents(seed=0, num_docs=30)
    train_ids = [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
    expected = pack_documents(train_ids, 64, tok.eos_token_id)
    blocks = load_array(tmp_path / "train.npy")
    assert blocks.dtype == np.uint16 and blocks.shape == expected.shape == (out.num_train_blocks, 64)
    np.testing.assert_array_equal(blocks, expected)
    stream = load_array(tmp_path / "eval" / "heldout.npy")
    np.testing.assert_array_equal(stream, token_stream(generate_documents(seed=9, num_docs=4), tok))
    for path in (tmp_path / "train.npy", tmp_path / "eval" / "heldout.npy"):
        meta = json.loads(path.with_name(path.name + ".json").read_text())
        assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert meta["num_tokens"] == int(np.prod(meta["shape"]))
        assert re.fullmatch(r"[0-9a-f]{64}", meta["fingerprint"])
    assert not list(tmp_path.rglob(".*tmp-*"))


def test_base_pretraining_stream_is_the_source_at_the_original_context_whatever_the_fine_tuning_context(tmp_path):
    cfg = _tiny_cfg()
    out_a = prepare_lm_data(cfg, tmp_path / "a", context_length=64, base_blocks=(16, 800))
    prepare_lm_data(cfg, tmp_path / "b", context_length=32, base_blocks=(16, 800))
    assert out_a.base_train_path == tmp_path / "a" / "pretrain" / "train.npy"
    tok = AutoTokenizer.from_pretrained(tmp_path / "a" / "tokenizer")
    docs = generate_documents(seed=0, num_docs=30)
    joined = _joined([tok(d, add_special_tokens=False)["input_ids"] for d in docs], tok.eos_token_id)[:800]
    expected = np.asarray(joined[: len(joined) // 16 * 16]).reshape(-1, 16)  # the first 800 tokens, in 16-token blocks
    base_a, base_b = (load_array(p / "pretrain" / "train.npy") for p in (tmp_path / "a", tmp_path / "b"))
    np.testing.assert_array_equal(base_a, expected)
    pretrain = [(tmp_path / d / "pretrain" / "train.npy").read_bytes() for d in ("a", "b")]
    assert pretrain[0] == pretrain[1]
    assert json.loads((tmp_path / "a" / "pretrain" / "manifest.json").read_text())["pretraining_data"] == {
        "file": "train.npy", "original_context": 16, "max_tokens": 800}
    assert load_array(tmp_path / "a" / "train.npy").shape[1] == 64  # the fine-tuning blocks do differ
    assert load_array(tmp_path / "b" / "train.npy").shape[1] == 32
    assert prepare_lm_data(cfg, tmp_path / "a", context_length=64).base_train_path is None  # a pretrained base
    assert not (tmp_path / "a" / "pretrain" / "train.npy").exists()  # ... leaves no stale pretraining data
    assert json.loads((tmp_path / "a" / "pretrain" / "manifest.json").read_text()) == {"pretraining_data": None}


def test_prepare_reuses_the_cache_and_rebuilds_on_fingerprint_change(tmp_path, monkeypatch):
    prepare_lm_data(_tiny_cfg(), tmp_path, context_length=64)
    calls = []
    real = lm_data.tokenize_documents
    monkeypatch.setattr(lm_data, "tokenize_documents", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(lm_data, "build_tokenizer", lambda *a, **k: pytest.fail("tokenizer retrained"))
    again = prepare_lm_data(_tiny_cfg(), tmp_path, context_length=64)
    assert calls == [] and all(again.reused.values())
    changed = prepare_lm_data(_tiny_cfg(max_train_tokens=3000), tmp_path, context_length=64)
    assert len(calls) == 1
    assert changed.reused == {"tokenizer": True, "train": False, "eval/heldout": True}
    assert changed.num_train_blocks == 3000 // 64
    longer = prepare_lm_data(_tiny_cfg(max_train_tokens=3000), tmp_path, context_length=128)
    assert len(calls) == 2 and load_array(longer.train_path).shape == (3000 // 128, 128)


def test_changed_local_file_rebuilds_its_stream(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "a.txt").write_text(_gutenberg("the old stone rests . " * 40), encoding="utf-8")
    cfg = _tiny_cfg(eval_sets={"books": SourceConfig(kind="local", path=str(books))})
    first = prepare_lm_data(cfg, tmp_path / "out", context_length=64)
    assert prepare_lm_data(cfg, tmp_path / "out", context_length=64).reused["eval/books"]
    (books / "a.txt").write_text(_gutenberg("the red boat waits . " * 50), encoding="utf-8")
    second = prepare_lm_data(cfg, tmp_path / "out", context_length=64)
    assert not second.reused["eval/books"] and second.reused["train"]
    assert second.eval_tokens["books"] != first.eval_tokens["books"]


def test_corrupt_byte_is_detected_with_the_file_named(tmp_path):
    prepare_lm_data(_tiny_cfg(), tmp_path, context_length=64)
    path = tmp_path / "train.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupt cache .*train\.npy.*delete it and rerun"):
        load_array(path)
    with pytest.raises(ValueError, match=r"corrupt cache .*train\.npy"):
        prepare_lm_data(_tiny_cfg(), tmp_path, context_length=64)
    tok_file = tmp_path / "tokenizer" / "tokenizer.json"
    tok_file.write_text(tok_file.read_text().replace("<unk>", "<unq>", 1))
    with pytest.raises(ValueError, match=r"corrupt cache .*tokenizer\.json"):
        prepare_lm_data(_tiny_cfg(), tmp_path, context_length=64)


def test_interrupted_write_leaves_no_half_file(tmp_path, monkeypatch):
    path = tmp_path / "a.npy"
    write_array(path, np.arange(10, dtype=np.uint16), "fp1", {})
    before = path.read_bytes()

    def broken_save(f, array, allow_pickle=False):
        f.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(lm_data.np, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        write_array(path, np.arange(20, dtype=np.uint16), "fp2", {})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]  # stale sidecar removed, no tmp file
    assert lm_data._cached(path, "fp1") is None  # without a sidecar the array is rebuilt, not trusted


def _write(path, text):
    path.write_text(text)
    return path


def test_prepare_too_few_tokens(tmp_path):
    cfg = _tiny_cfg(train=SourceConfig(kind="synthetic", num_docs=1, passkey_fraction=0.0))
    tok_docs = list(generate_documents(seed=0, num_docs=1, passkey_fraction=0.0))
    msg = r"training source \(kind='synthetic'\): too few tokens: \d+ available, 4096 needed"
    with pytest.raises(ValueError, match=msg):
        prepare_lm_data(cfg, tmp_path, context_length=4096)
    tok = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")
    n = len(tok(tok_docs[0], add_special_tokens=False)["input_ids"])
    with pytest.raises(ValueError, match=rf"{n} available, 4096 needed"):
        prepare_lm_data(cfg, tmp_path, context_length=4096)
    short = "the old stone rests ."
    cfg = _tiny_cfg(eval_sets={"heldout": SourceConfig(kind="local", path=str(_write(tmp_path / "e.txt", short)))})
    with pytest.raises(ValueError, match=r"eval set 'heldout' \(kind='local'\): (\d+) available, 65 needed") as err:
        prepare_lm_data(cfg, tmp_path, context_length=64)
    n = len(AutoTokenizer.from_pretrained(tmp_path / "tokenizer")(short, add_special_tokens=False)["input_ids"])
    assert f": {n} available" in str(err.value)


def test_packed_blocks_dataset(tmp_path):
    prepare_lm_data(_tiny_cfg(), tmp_path, context_length=64)
    ds = PackedBlocks(tmp_path / "train.npy")
    raw = np.load(tmp_path / "train.npy")
    assert len(ds) == raw.shape[0]
    item = ds[len(ds) - 1]
    assert item["input_ids"].dtype == torch.long and item["input_ids"].shape == (64,)
    assert item["input_ids"].tolist() == raw[-1].tolist()
    assert torch.equal(item["labels"], item["input_ids"])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["input_ids"].shape == (3, 64)
    assert batch["input_ids"].tolist() == raw[:3].tolist()


# ---------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ["synthetic", "local", "redpajama"])
def test_yaml_configs_validate_against_the_schema(name):
    path = REPO_ROOT / "conf" / "data" / f"{name}.yaml"
    assert path.read_text().splitlines()[0] == "# @package longlora.data"
    cfg = lm_data_config_from_dict(OmegaConf.load(path))
    assert isinstance(cfg.train, SourceConfig) and cfg.eval_sets
    assert all(isinstance(s, SourceConfig) for s in cfg.eval_sets.values())
    if name == "local" and SHARED.is_dir():
        for src in [cfg.train, *cfg.eval_sets.values()]:
            assert (REPO_ROOT / src.path).exists(), src.path


def test_data_group_composes_under_longlora_data(tmp_path):
    from hydra import compose, initialize_config_dir

    (tmp_path / "data").symlink_to(REPO_ROOT / "conf" / "data")
    (tmp_path / "root.yaml").write_text("defaults:\n  - data: synthetic\n  - _self_\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        composed = compose("root", overrides=["data=local", "longlora.data.max_eval_tokens=99"])
    cfg = lm_data_config_from_dict(composed.longlora.data)
    assert cfg.eval_sets["pg19_validation"].glob == "*.txt" and cfg.max_eval_tokens == 99
    assert set(cfg.eval_sets) == {"pg19_validation", "pg19_test", "proof_pile_test"}  # no synthetic set left over
    assert cfg.roles == {r: r for r in ("pg19_validation", "pg19_test", "proof_pile_test")}
    assert cfg.eval_sets["proof_pile_test"].min_doc_tokens == 32768 and cfg.eval_sets["proof_pile_test"].sample_docs == 128


def test_config_typo_is_named():
    with pytest.raises(Exception, match="knd"):
        lm_data_config_from_dict({"train": {"knd": "local"}})


def test_redpajama_layout_tokenised_with_datasets_map_and_capped(tmp_path, bpe):
    """The training path on the hub layout: shuffled rows, datasets.map tokenisation, the token cap."""
    from repro.data.lm_data import train_token_cap

    folder = _redpajama_sample_folder(tmp_path)
    src = SourceConfig(kind="hub", hub_name="json", hub_data_files=str(folder / "*.jsonl"), shuffle_seed=0)
    lists = HubSource(src).token_lists(bpe, num_proc=1, max_tokens=0, chunk_docs=100)
    docs = list(HubSource(src))  # the same shuffled order, read row by row
    assert [t.tolist() for t in lists] == [bpe(d, add_special_tokens=False)["input_ids"] for d in docs]
    capped = HubSource(src).token_lists(bpe, num_proc=1, max_tokens=50, chunk_docs=7)
    assert 7 <= len(capped) < len(lists) and len(capped) % 7 == 0  # stops after the chunk passing the cap
    assert train_token_cap(1000, 64, 8192, 0.02) == 534_773_760
    assert train_token_cap(10, 4, 512, 0.0) == 20_480
