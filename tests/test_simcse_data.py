"""Synthetic sources, NLI reader, WordPiece tokenizer, prepare_simcse_data and the Hydra YAMLs."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from repro.data.nli import NLITriplet, load_nli_hub, read_nli_csv, synthetic_triplets
from repro.data.sentences import SyntheticGrammar, load_wiki1m_hub, read_sentence_file, synthetic_sentences
from repro.data.simcse_data import build_simcse_data_config, prepare_simcse_data, train_wordpiece_tokenizer
from repro.data.sts import SLOT_WEIGHTS, synthetic_sts_task
from repro.schemas import SimCSEDataConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CONF = Path(__file__).resolve().parents[1] / "conf" / "sentence_data"


def parse(sentence: str, g: SyntheticGrammar) -> dict:
    """Recover the concepts of a grammar sentence from its words (independent of ``render``)."""
    text = sentence.removesuffix(" .")
    out = {"adjective": None, "place": None, "negated": False}
    for c, forms in enumerate(g.places):
        for f in forms:
            if text.endswith(" " + f):
                out["place"], text = c, text[: -len(f) - 1]
    words = text.split()
    assert words[0] == "the"
    lookup = {f: ("adjective", c) for c, fs in enumerate(g.adjectives) for f in fs}
    lookup |= {f: ("subject", c) for c, fs in enumerate(g.subjects) for f in fs}
    lookup |= {f: ("object", c) for c, fs in enumerate(g.objects) for f in fs}
    lookup |= {f: ("verb", c) for c, fs in enumerate(g.verbs) for pair in fs for f in pair}
    for w in words[1:]:
        if w in ("does", "not"):
            out["negated"] = True
        elif w != "the":
            slot, c = lookup[w]
            out[slot] = c
    return out


def test_synthetic_sentences_deterministic_per_seed():
    a, b, c = synthetic_sentences(50, 7), synthetic_sentences(50, 7), synthetic_sentences(50, 8)
    assert a == b and a != c and len(set(a)) > 40
    g = SyntheticGrammar()
    assert all(parse(s, g)["adjective"] is not None and parse(s, g)["place"] is not None for s in a)


def test_synthetic_triplets_are_well_formed():
    g = SyntheticGrammar()
    triplets = synthetic_triplets(200, 3)
    assert triplets == synthetic_triplets(200, 3) and triplets != synthetic_triplets(200, 4)
    for t in triplets:
        p, e, c = (parse(s, g) for s in t)
        assert all(e[k] == p[k] for k in ("subject", "verb", "object", "negated"))
        assert e["adjective"] in (None, p["adjective"]) and e["place"] in (None, p["place"])
        assert (c["subject"] != p["subject"]) != (c["negated"] != p["negated"])  # exactly one change
        assert (c["verb"], c["object"], c["adjective"], c["place"]) == (p["verb"], p["object"], p["adjective"], p["place"])


def test_synthetic_sts_gold_counts_shared_slots():
    g = SyntheticGrammar()
    task = synthetic_sts_task("STS13", seed=0, n_pairs=120)
    assert dict(task) == dict(synthetic_sts_task("STS13", seed=0, n_pairs=120))
    assert dict(task) != dict(synthetic_sts_task("STS13", seed=1, n_pairs=120))
    golds = []
    for pairs in task.values():
        for a, b, gold in zip(*pairs, strict=False):
            pa, pb = parse(a, g), parse(b, g)
            assert gold == pytest.approx(sum(w for slot, w in SLOT_WEIGHTS.items() if pa[slot] == pb[slot]))
            golds.append(gold)
    assert min(golds) < 1.5 and max(golds) == 5.0
    assert len({len(p.gold) for p in task.values()}) == 3  # unequal subsets, so mean != wmean
    assert set(synthetic_sts_task("stsb", 0, 10)) == {"dev", "test"}


def test_read_nli_csv_and_errors(tmp_path):
    path = tmp_path / "nli.csv"
    path.write_text('sent0,sent1,hard_neg\n"a, b",c,d\ne,f,g\n')
    assert read_nli_csv(path) == [NLITriplet("a, b", "c", "d"), NLITriplet("e", "f", "g")]
    path.write_text("sent0,sent1,hard_neg\na,b,c\nd,e\n")
    with pytest.raises(ValueError, match=r"nli\.csv:3: expected 3 columns, got 2"):
        read_nli_csv(path)
    path.write_text("sent0,sent1,hard_neg\na, ,c\n")
    with pytest.raises(ValueError, match=r"nli\.csv:2: empty sentence in column 'sent1'"):
        read_nli_csv(path)
    path.write_text("premise,hypothesis\na,b\n")
    with pytest.raises(ValueError, match=r"nli\.csv:1: header"):
        read_nli_csv(path)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_nli_csv(tmp_path / "missing.csv")


def test_hub_training_files_via_hf_hub_download(tmp_path, monkeypatch):
    import huggingface_hub

    (tmp_path / "wiki1m_for_simcse.txt").write_text("one sentence .\n\nanother one .\n")
    (tmp_path / "nli_for_simcse.csv").write_text("sent0,sent1,hard_neg\na,b,c\n")
    seen = []

    def fake_download(repo_id, filename, repo_type, revision=None):
        seen.append((repo_id, filename, repo_type))
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert load_wiki1m_hub() == ["one sentence .", "another one ."]
    assert load_nli_hub() == [NLITriplet("a", "b", "c")]
    assert seen == [("princeton-nlp/datasets-for-simcse", "wiki1m_for_simcse.txt", "dataset"),
                    ("princeton-nlp/datasets-for-simcse", "nli_for_simcse.csv", "dataset")]


def test_wordpiece_tokenizer_round_trip(tmp_path):
    from transformers import AutoTokenizer

    sentences = synthetic_sentences(300, 0)
    train_wordpiece_tokenizer(sentences, tmp_path / "tok", vocab_size=500)
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    ids = tok("The Big Dog chases the ball .")["input_ids"]
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert tokens[1:-1] == ["the", "big", "dog", "chases", "the", "ball", "."]
    assert tok.decode(ids, skip_special_tokens=True) == "the big dog chases the ball."
    assert tok.convert_ids_to_tokens(tok("€")["input_ids"])[1] == "[UNK]"
    assert tok.pad_token == "[PAD]" and tok.mask_token == "[MASK]" and len(tok) <= 500


def _line_count(path: Path) -> int:
    return sum(1 for _ in path.open(encoding="utf-8"))


def test_prepare_synthetic_writes_manifest_and_skips_rerun(tmp_path):
    cfg = {"n_sentences": 120, "n_triplets": 40, "n_sts_pairs": 30, "train_tokenizer": True, "vocab_size": 300}
    out = tmp_path / "simcse"
    manifest = prepare_simcse_data(cfg, out)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["counts"]["train_sentences"] == _line_count(out / "train_sentences.txt") == 120
    assert manifest["counts"]["train_triplets"] == _line_count(out / "train_triplets.csv") - 1 == 40
    assert manifest["counts"]["sts"]["stsb"] == {"dev": 30, "test": 30}
    with (out / "sts" / "sts12_test.tsv").open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert len(rows) - 1 == sum(manifest["counts"]["sts"]["sts12"].values())
    for rel, meta in manifest["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == meta["sha256"]
    assert "tokenizer/tokenizer.json" in manifest["files"] and "synthetic" in manifest["note"]
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = prepare_simcse_data(cfg, out)
    assert again.pop("up_to_date") is True and again == manifest
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    changed = prepare_simcse_data({**cfg, "seed": 1}, out)
    assert "up_to_date" not in changed and changed["fingerprint"] != manifest["fingerprint"]
    assert (out / "train_sentences.txt").read_text().splitlines() == synthetic_sentences(120, 1)


def test_prepare_local_reruns_when_an_input_changes(tmp_path):
    wiki = tmp_path / "wiki.txt"
    wiki.write_text("a first sentence .\na second one .\n")
    sts_root = tmp_path / "sts"
    sts_root.mkdir()
    for key, split in [(f"sts1{i}", "test") for i in range(2, 7)] + [("stsb", "dev"), ("stsb", "test"), ("sick", "test")]:
        rows = "".join(f"{i % 6}\t{key} {split} x{i}\ty{i}\tsub{i % 2}\t{i}\n" for i in range(6))
        (sts_root / f"{key}_{split}.tsv").write_text("score\tsentence1\tsentence2\tsource\tline\n" + rows)
    cfg = {"source": "local", "objective": "unsup", "wiki_path": str(wiki), "sts_root": str(sts_root), "sts_layout": "tsv"}
    out = tmp_path / "out"
    first = prepare_simcse_data(cfg, out)
    assert first["counts"]["sts"]["sts12"] == {"sub0": 3, "sub1": 3}
    assert "train_triplets" not in first["counts"]
    assert prepare_simcse_data(cfg, out).get("up_to_date") is True
    wiki.write_text("a first sentence .\na second one .\na third .\n")
    second = prepare_simcse_data(cfg, out)
    assert "up_to_date" not in second and second["counts"]["train_sentences"] == 3
    (out / "train_sentences.txt").write_text("tampered\n")
    assert "up_to_date" not in prepare_simcse_data(cfg, out)
    assert read_sentence_file(out / "train_sentences.txt") == ["a first sentence .", "a second one .", "a third ."]


def test_config_validation_names_the_key(tmp_path):
    with pytest.raises(KeyError, match="wiki_pth"):
        build_simcse_data_config({"wiki_pth": "x"})
    with pytest.raises(ValueError, match="simcse.data.source='web'"):
        build_simcse_data_config({"source": "web"})
    with pytest.raises(ValueError, match="simcse.data.nli_path must be set"):
        build_simcse_data_config({"source": "local", "objective": "sup", "sts_root": "x"})


@pytest.mark.parametrize("name", ["synthetic", "local", "hub"])
def test_hydra_yaml_files_match_the_dataclass(name):
    path = CONF / f"{name}.yaml"
    assert path.read_text().splitlines()[0] == "# @package simcse.data"
    node = OmegaConf.merge(OmegaConf.structured(SimCSEDataConfig), OmegaConf.load(path))
    cfg = build_simcse_data_config(OmegaConf.to_container(node))
    assert cfg.source == name


def test_prepared_data_is_byte_identical_across_processes(tmp_path):
    """Two processes preparing the same config write the same bytes (tokenizer included).

    Each run is its own interpreter, as two `dvc repro` runs are: `tokenizers`' WordPiece trainer gave
    other token ids in every process (Rust's randomly seeded hash maps), so everything trained on the
    tokenizer moved from one full rerun to the next.
    """
    import subprocess
    import sys

    cfg = {"n_sentences": 200, "n_triplets": 40, "n_sts_pairs": 30, "train_tokenizer": True, "vocab_size": 300}
    code = ("import json, sys; from repro.data.simcse_data import prepare_simcse_data; "
            "prepare_simcse_data(json.loads(sys.argv[1]), sys.argv[2])")
    outs = [tmp_path / f"run{i}" for i in (1, 2)]
    for out in outs:
        subprocess.run([sys.executable, "-c", code, json.dumps(cfg), str(out)], check=True, timeout=300)
    files = [{p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
             for out in outs]
    assert files[0].keys() == files[1].keys() and "tokenizer/tokenizer.json" in files[0]
    assert [k for k in files[0] if files[0][k] != files[1][k]] == []
