"""STS readers: both layouts on generated fixtures, validation errors, hub loader, real shared data."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from repro.data.sts import SENTEVAL_SUBSETS, STSPairs, STSTask, load_sts_hub, read_sts_task, write_sts_tsv

SHARED_STS = Path(__file__).resolve().parents[2] / "shared" / "data" / "sts"


def _write_yearly(root: Path, name: str, rows: dict[str, list[tuple[str, str, str]]]) -> None:
    """rows: subset -> [(s1, s2, gold_or_blank)]; STS.input/STS.gs line-aligned as in SentEval."""
    folder = root / f"{name}-en-test"
    folder.mkdir(parents=True, exist_ok=True)
    for subset, pairs in rows.items():
        (folder / f"STS.input.{subset}.txt").write_text("".join(f"{a}\t{b}\n" for a, b, _ in pairs))
        (folder / f"STS.gs.{subset}.txt").write_text("".join(f"{g}\n" for _, _, g in pairs))


def _sts15_rows() -> dict[str, list[tuple[str, str, str]]]:
    rows = {}
    for k, subset in enumerate(SENTEVAL_SUBSETS["STS15"]):
        pairs = [(f"s{k} a{i}", f"s{k}  b{i} ", "" if i % 3 == 1 else f"{(i + k) % 6}.0") for i in range(6)]
        rows[subset] = pairs
    return rows


def test_senteval_yearly_skips_blank_gold_and_counts(tmp_path):
    rows = _sts15_rows()
    _write_yearly(tmp_path, "STS15", rows)
    task = read_sts_task("sts15", tmp_path, "senteval")
    assert list(task) == list(SENTEVAL_SUBSETS["STS15"])
    for subset, pairs in rows.items():
        kept = [(a, " ".join(b.split()), float(g)) for a, b, g in pairs if g]
        assert list(zip(*task[subset], strict=False)) == kept
        assert task.skipped[subset] == sum(1 for *_, g in pairs if not g)


def test_senteval_stsb_and_sick(tmp_path):
    (tmp_path / "STSBenchmark").mkdir()
    data = {split: [(f"{split} x{i}", f"{split} y{i}", i * 0.5) for i in range(5)] for split in ("train", "dev", "test")}
    for split, rows in data.items():
        lines = "".join(f"genre\tfile\tyear\t{i:04d}\t{g:.3f}\t{a}\t{b}\n" for i, (a, b, g) in enumerate(rows))
        (tmp_path / "STSBenchmark" / f"sts-{split}.csv").write_text(lines)
    (tmp_path / "SICK").mkdir()
    sick = [(f"A {i}", f"B {i}", 1 + i * 0.7) for i in range(4)]
    body = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
    body += "".join(f"{i}\t{a}\t{b}\t{g}\tNEUTRAL\n" for i, (a, b, g) in enumerate(sick))
    (tmp_path / "SICK" / "SICK_test_annotated.txt").write_text(body)

    stsb = read_sts_task("STSBenchmark", tmp_path, "senteval")
    assert set(stsb) == {"train", "dev", "test"}
    for split, rows in data.items():
        assert list(zip(*stsb[split], strict=False)) == rows
    sickr = read_sts_task("sickr", tmp_path, "senteval", splits=("test",))
    assert list(zip(*sickr["test"], strict=False)) == sick
    with pytest.raises(FileNotFoundError, match="SICK_train.txt"):
        read_sts_task("sickr", tmp_path, "senteval")


def test_tsv_layout_groups_subsets_and_round_trips(tmp_path):
    rows = [("2.5", "a b", "c d", "MSRpar", "0"), ("4", "e", "f \"g\"", "MSRvid", "1"), ("0", "h", "i", "MSRpar", "3")]
    with (tmp_path / "sts12_test.tsv").open("w", newline="") as handle:
        handle.write("score\tsentence1\tsentence2\tsource\tline\n")
        handle.writelines("\t".join(r) + "\n" for r in rows)
    task = read_sts_task("STS12", tmp_path, "tsv")
    assert task["MSRpar"] == STSPairs(["a b", "h"], ["c d", "i"], [2.5, 0.0])
    assert task["MSRvid"] == STSPairs(["e"], ['f "g"'], [4.0])
    out = tmp_path / "out"
    write_sts_tsv(task, out)
    again = read_sts_task("STS12", out, "tsv")
    assert {k: tuple(v) for k, v in again.items()} == {k: tuple(v) for k, v in task.items()}
    stsb = STSTask("stsb", {"dev": STSPairs(["x"] * 3, ["y", "z", "w"], [1.0, 2.0, 3.0]),
                            "test": STSPairs(["p", "q"], ["r", "s"], [0.0, 5.0])})
    write_sts_tsv(stsb, out)
    assert dict(read_sts_task("stsb", out, "tsv", splits=("dev", "test"))) == dict(stsb)


@pytest.mark.parametrize(("gs_lines", "input_lines", "match"), [
    (["1.0", "2.0"], ["a\tb", "only-one-column"], r"STS\.input\.MSRpar\.txt:2: expected 2"),
    (["1.0", "5.5"], ["a\tb", "c\td"], r"STS\.gs\.MSRpar\.txt:2: score 5\.5 outside \[0, 5\]"),
    (["1.0", "x"], ["a\tb", "c\td"], r"STS\.gs\.MSRpar\.txt:2: score 'x' is not a number"),
    (["1.0", "2.0"], ["a\tb", "c\t  "], r"STS\.input\.MSRpar\.txt:2: empty sentence"),
    (["1.0"], ["a\tb", "c\td"], r"must align"),
])
def test_senteval_errors_name_file_and_line(tmp_path, gs_lines, input_lines, match):
    folder = tmp_path / "STS12-en-test"
    folder.mkdir()
    for subset in SENTEVAL_SUBSETS["STS12"]:
        (folder / f"STS.input.{subset}.txt").write_text("p\tq\n")
        (folder / f"STS.gs.{subset}.txt").write_text("3\n")
    (folder / "STS.input.MSRpar.txt").write_text("\n".join(input_lines) + "\n")
    (folder / "STS.gs.MSRpar.txt").write_text("\n".join(gs_lines) + "\n")
    with pytest.raises(ValueError, match=match):
        read_sts_task("STS12", tmp_path, "senteval")


def test_missing_subset_and_bad_rows_in_tsv(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"STS\.input\.FNWN\.txt"):
        read_sts_task("STS13", tmp_path, "senteval")
    bad = tmp_path / "stsb_test.tsv"
    bad.write_text("score\tsentence1\tsentence2\tsource\tline\n1\ta\tb\tsrc\t0\n2\ta\tb\n")
    with pytest.raises(ValueError, match=r"stsb_test\.tsv:3: expected 5 columns, got 3"):
        read_sts_task("stsb", tmp_path, "tsv", splits=("test",))
    bad.write_text("score\tsentence1\tsentence2\tsource\tline\n-0.5\ta\tb\tsrc\t0\n")
    with pytest.raises(ValueError, match=r"stsb_test\.tsv:2: score -0\.5 outside"):
        read_sts_task("stsb", tmp_path, "tsv", splits=("test",))
    (tmp_path / "STSBenchmark").mkdir()
    (tmp_path / "STSBenchmark" / "sts-dev.csv").write_text("g\tf\ty\t1\t2.0\tonly a\n")
    with pytest.raises(ValueError, match=r"sts-dev\.csv:1: expected 7"):
        read_sts_task("stsb", tmp_path, "senteval", splits=("dev",))
    with pytest.raises(ValueError, match="unknown STS task"):
        read_sts_task("STS17", tmp_path)
    with pytest.raises(ValueError, match="no split 'valid'"):
        read_sts_task("stsb", tmp_path, "tsv", splits=("valid",))


class _FakeDataset(list):
    def __init__(self, rows):
        super().__init__(rows)
        self.column_names = list(rows[0])


def test_hub_loader_maps_splits_and_rescales(monkeypatch):
    import datasets

    calls = []
    rows = [{"sentence1": "a", "sentence2": "b", "score": 0.2}, {"sentence1": "c", "sentence2": "d", "score": 1.0}]

    def fake_load(repo, split):
        calls.append((repo, split))
        return _FakeDataset(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    task = load_sts_hub("stsb", splits=("dev", "test"))
    assert calls == [("sentence-transformers/stsb", "validation"), ("sentence-transformers/stsb", "test")]
    assert task["dev"].gold == pytest.approx([r["score"] * 5 for r in rows])
    calls.clear()
    task = load_sts_hub("STS14")
    assert calls == [("mteb/sts14-sts", "test")] and list(task) == ["test"]
    assert task["test"].gold == [0.2, 1.0]
    monkeypatch.setattr(datasets, "load_dataset", lambda repo, split: _FakeDataset([{"sentence1": "a", "score": 1}]))
    with pytest.raises(ValueError, match="lacks column 'sentence2'"):
        load_sts_hub("sts12")
    with pytest.raises(ValueError, match="test split only"):
        load_sts_hub("sickr", splits=("trial",))


@pytest.mark.skipif(not (SHARED_STS / "senteval").is_dir(), reason="shared data ../shared/data/sts not present")
def test_real_shared_data_counts():
    senteval, tsv = SHARED_STS / "senteval", SHARED_STS / "tsv"
    stsb = read_sts_task("STSBenchmark", senteval, "senteval", splits=("dev", "test"))
    for split, expected in (("dev", 1500), ("test", 1103)):  # MANIFEST.md counts
        tsv_rows = sum(1 for _ in (tsv / f"stsb_{split}.tsv").open()) - 1
        assert len(stsb[split].gold) == tsv_rows == expected
    stsb_tsv = read_sts_task("STSBenchmark", tsv, "tsv", splits=("test",))
    assert dict(stsb_tsv)["test"] == stsb["test"]
    for name in ("STS15", "STS16"):
        task = read_sts_task(name, senteval, "senteval")
        folder = senteval / f"{name}-en-test"
        for subset in task:
            golds = (folder / f"STS.gs.{subset}.txt").read_text().splitlines()
            assert task.skipped[subset] == sum(1 for g in golds if not g.strip())
            assert len(task[subset].gold) == sum(1 for g in golds if g.strip())
        with (tsv / f"{name.lower()}_test.tsv").open(newline="") as handle:
            n_tsv = sum(1 for _ in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)) - 1
        assert sum(len(p.gold) for p in task.values()) == n_tsv
