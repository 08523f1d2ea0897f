"""Hub data paths offline: wiki1m, nli_for_simcse.csv and the STS sets, laid out as the hub repos'
files in local folders, read by the real loaders (``hf_hub_download`` through a hub cache, and
``datasets.load_dataset`` on a repo folder). Contents come from ../shared/data.

SICK-R's test split comes from ``senteval.tar`` (princeton-nlp/datasets-for-simcse), as SimCSE's
``download_dataset.sh`` fetches it. The shared copy of ``SICK_test_annotated.txt`` lacks its held-out
pairs, so the archive built here appends that many placeholder rows to reach the real file's 4,927 pairs
(the loader asserts that count); a second archive without them must be rejected."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from repro.data.nli import load_nli_hub, read_nli_csv
from repro.data.sentences import load_wiki1m_hub
from repro.data.simcse_data import prepare_simcse_data
from repro.data.sts import SICK_TEST_PAIRS, load_sick_test_hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"
STS_FILES = {"mteb/sts12-sts": "sts12", "mteb/sts13-sts": "sts13", "mteb/sts14-sts": "sts14",
             "mteb/sts15-sts": "sts15", "mteb/sts16-sts": "sts16"}


def _tsv_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _write_jsonl_gz(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"sentence1": r["sentence1"], "sentence2": r["sentence2"],
                                "score": float(r["score"])}) + "\n")


@pytest.fixture(scope="module")
def hub_root(shared_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    simcse = root / "princeton-nlp" / "datasets-for-simcse"
    simcse.mkdir(parents=True)
    wiki = (shared_data / "wiki" / "wiki_sentences.txt").read_text(encoding="utf-8").splitlines()[:300]
    (simcse / "wiki1m_for_simcse.txt").write_text("\n".join(wiki) + "\n", encoding="utf-8")
    nli = (shared_data / "nli" / "nli_for_simcse_snli_dev.csv").read_text(encoding="utf-8").splitlines()[:201]
    (simcse / "nli_for_simcse.csv").write_text("\n".join(nli) + "\n", encoding="utf-8")
    tsv = shared_data / "sts" / "tsv_cased"
    for repo, stem in STS_FILES.items():
        _write_jsonl_gz(root / repo / "test.jsonl.gz", _tsv_rows(tsv / f"{stem}_test.tsv"))
    for split, hub_split in (("train", "train"), ("dev", "validation"), ("test", "test")):
        _write_jsonl_gz(root / "mteb" / "stsbenchmark-sts" / f"{hub_split}.jsonl.gz", _tsv_rows(tsv / f"stsb_{split}.tsv"))
    _write_senteval_tar(simcse / "senteval.tar", _sick_test_lines(shared_data, pad_to=SICK_TEST_PAIRS))
    return root


def _sick_test_lines(shared_data: Path, pad_to: int | None) -> list[str]:
    lines = (shared_data / "sts" / "senteval" / "SICK" / "SICK_test_annotated.txt").read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    if pad_to is not None:  # placeholders for the held-out pairs (not in ../shared/data)
        rows += [f"{900000 + i}\tplaceholder sentence {i}\tanother placeholder {i}\t3.0\tNEUTRAL"
                 for i in range(pad_to - len(rows))]
    return [header, *rows]


def _write_senteval_tar(path: Path, sick_test: list[str]) -> None:
    data = ("\n".join(sick_test) + "\n").encode("utf-8")
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("SICK/SICK_test_annotated.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_wiki_and_nli_through_the_hub_cache(hub_root, tmp_path, monkeypatch, shared_data):
    # the hub cache layout hf_hub_download reads offline: datasets--<org>--<name>/{refs/main,snapshots/<commit>/}
    repo = tmp_path / "cache" / "datasets--princeton-nlp--datasets-for-simcse"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    for name in ("wiki1m_for_simcse.txt", "nli_for_simcse.csv"):
        (snap / name).write_bytes((hub_root / "princeton-nlp" / "datasets-for-simcse" / name).read_bytes())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    sentences = load_wiki1m_hub()
    expected = (shared_data / "wiki" / "wiki_sentences.txt").read_text(encoding="utf-8").splitlines()[:300]
    assert sentences == [s for s in expected if s.strip()]
    triplets = load_nli_hub(max_triplets=50)
    assert triplets == read_nli_csv(shared_data / "nli" / "nli_for_simcse_snli_dev.csv", max_triplets=50)


def test_prepare_from_hub_layout_folders(hub_root, tmp_path, shared_data):
    manifest = prepare_simcse_data({"source": "hub", "hub_local_root": str(hub_root),
                                    "hub_stsb_repo": "mteb/stsbenchmark-sts"}, tmp_path / "out")
    counts = manifest["counts"]
    assert counts["train_sentences"] == 300 and counts["train_triplets"] == 200
    tsv = shared_data / "sts" / "tsv_cased"
    for stem in ("sts12", "sts13", "sts14", "sts15", "sts16"):
        assert sum(counts["sts"][stem].values()) == len(_tsv_rows(tsv / f"{stem}_test.tsv"))
    assert counts["sts"]["stsb"] == {"dev": len(_tsv_rows(tsv / "stsb_dev.tsv")),
                                     "test": len(_tsv_rows(tsv / "stsb_test.tsv"))}
    assert counts["sts"]["sickr"] == {"test": SICK_TEST_PAIRS}


def test_sick_test_from_senteval_tar_checks_the_pair_count(hub_root, tmp_path, shared_data):
    pairs = load_sick_test_hub(local_root=hub_root)
    shared = _tsv_rows(shared_data / "sts" / "tsv_cased" / "sick_test.tsv")
    assert len(pairs.gold) == SICK_TEST_PAIRS
    assert pairs.s1[:len(shared)] == [r["sentence1"] for r in shared]
    assert pairs.gold[:len(shared)] == pytest.approx([float(r["score"]) for r in shared])
    short = tmp_path / "princeton-nlp" / "datasets-for-simcse"
    short.mkdir(parents=True)
    _write_senteval_tar(short / "senteval.tar", _sick_test_lines(shared_data, pad_to=None))
    with pytest.raises(ValueError, match=f"holds {len(shared)} SICK-R test pairs.*{SICK_TEST_PAIRS}"):
        load_sick_test_hub(local_root=tmp_path)
    with tarfile.open(short / "senteval.tar", "w"):
        pass  # an archive without the SICK member
    with pytest.raises(FileNotFoundError, match="SICK/SICK_test_annotated.txt"):
        load_sick_test_hub(local_root=tmp_path)


def test_missing_local_repo_names_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="hub_local_root"):
        load_wiki1m_hub(local_root=tmp_path)
