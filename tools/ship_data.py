"""Copy the real data the tiny models run on into ``data/shipped/`` and write its manifest.

A fresh clone has no ``../shared/data``, so real text for the tiny profile (``data=shipped``,
``sentence_data=shipped``) travels with the project: a few MB of redistributable files, copied byte for
byte from a shared-data folder laid out as its ``MANIFEST.md`` describes. ``data/shipped/MANIFEST.md``
gives every file's role, source repository and commit, licence (as the source states it) and sha256;
``tests/test_shipped_data.py`` checks the files against it.

    python -m tools.ship_data --src ../shared/data      # (re)write data/shipped/ and its manifest
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from repro.fingerprint import file_sha256

# (path under the shared-data root, path under data/shipped, role with data=shipped / sentence_data=shipped)
FILES: tuple[tuple[str, str, str], ...] = (
    # LongLoRA: the tiny Llama pretrains and fine-tunes on four books, and is evaluated on two held-out
    # ones (PG19 validation / test stand-ins) and on LaTeX chapters (the proof-pile stand-in).
    ("books/pg11.txt", "longlora/books_train/pg11.txt",
     "LongLoRA train (pretraining and fine-tuning)"),
    ("books/pg35.txt", "longlora/books_train/pg35.txt",
     "LongLoRA train (pretraining and fine-tuning)"),
    ("books/pg219.txt", "longlora/books_train/pg219.txt",
     "LongLoRA train (pretraining and fine-tuning)"),
    ("books/pg36.txt", "longlora/books_train/pg36.txt",
     "LongLoRA train (pretraining and fine-tuning)"),
    ("books/pg2852.txt", "longlora/books_validation/pg2852.txt",
     "LongLoRA PG19-style validation (held out)"),
    ("books/pg308.txt", "longlora/books_test/pg308.txt",
     "LongLoRA PG19-style test (held out)"),
    ("math/stacks_project/pic.tex", "longlora/math/stacks_project/pic.tex",
     "LongLoRA proof-pile-style test"),
    ("math/stacks_project/examples-stacks.tex", "longlora/math/stacks_project/examples-stacks.tex",
     "LongLoRA proof-pile-style test"),
    ("math/stacks_project/COPYING", "longlora/math/stacks_project/COPYING",
     "licence of the Stacks Project chapters"),
    ("math/hott_book/formal.tex", "longlora/math/hott_book/formal.tex",
     "LongLoRA proof-pile-style test"),
    ("math/hott_book/introduction.tex", "longlora/math/hott_book/introduction.tex",
     "LongLoRA proof-pile-style test"),
    ("math/hott_book/README.md", "longlora/math/hott_book/README.md",
     "licence statement of the HoTT book chapters"),
    # SimCSE: unsupervised SimCSE on Wikipedia sentences, supervised SimCSE on SNLI
    # triplets, STS12-16 / STS-B / SICK-R scoring, SentEval transfer tasks.
    ("wiki/wiki_sentences.txt", "simcse/wiki_sentences.txt",
     "SimCSE unsupervised training (wiki1m stand-in)"),
    ("nli/nli_for_simcse_snli_dev.csv", "simcse/nli_for_simcse_snli_dev.csv",
     "SimCSE supervised training (nli_for_simcse.csv stand-in)"),
    ("sts/tsv/sts12_test.tsv", "simcse/sts/sts12_test.tsv",
     "SimCSE STS12 test"),
    ("sts/tsv/sts13_test.tsv", "simcse/sts/sts13_test.tsv",
     "SimCSE STS13 test"),
    ("sts/tsv/sts14_test.tsv", "simcse/sts/sts14_test.tsv",
     "SimCSE STS14 test"),
    ("sts/tsv/sts15_test.tsv", "simcse/sts/sts15_test.tsv",
     "SimCSE STS15 test"),
    ("sts/tsv/sts16_test.tsv", "simcse/sts/sts16_test.tsv",
     "SimCSE STS16 test"),
    ("sts/tsv/stsb_dev.tsv", "simcse/sts/stsb_dev.tsv",
     "SimCSE STS-B dev (model selection)"),
    ("sts/tsv/stsb_test.tsv", "simcse/sts/stsb_test.tsv",
     "SimCSE STS-B test"),
    ("sts/tsv_cased/sick_trial.tsv", "simcse/sts/sick_trial.tsv",
     "SimCSE SICK-R dev (trial)"),
    ("sts/tsv_cased/sick_test.tsv", "simcse/sts/sick_test.tsv",
     "SimCSE SICK-R test"),
    ("senteval_transfer/MR/rt-polarity.pos", "simcse/transfer/MR/rt-polarity.pos",
     "SimCSE transfer task MR"),
    ("senteval_transfer/MR/rt-polarity.neg", "simcse/transfer/MR/rt-polarity.neg",
     "SimCSE transfer task MR"),
    ("senteval_transfer/CR/custrev.pos", "simcse/transfer/CR/custrev.pos",
     "SimCSE transfer task CR"),
    ("senteval_transfer/CR/custrev.neg", "simcse/transfer/CR/custrev.neg",
     "SimCSE transfer task CR"),
    ("senteval_transfer/MPQA/mpqa.pos", "simcse/transfer/MPQA/mpqa.pos",
     "SimCSE transfer task MPQA"),
    ("senteval_transfer/MPQA/mpqa.neg", "simcse/transfer/MPQA/mpqa.neg",
     "SimCSE transfer task MPQA"),
    ("senteval_transfer/TREC/train_5500.label", "simcse/transfer/TREC/train_5500.label",
     "SimCSE transfer task TREC"),
    ("senteval_transfer/TREC/TREC_10.label", "simcse/transfer/TREC/TREC_10.label",
     "SimCSE transfer task TREC"),
)

HEADER = """# Shipped data

Real, redistributable data the tiny models run on (`data=shipped`, `sentence_data=shipped`), so a fresh
clone needs nothing else. Written by `python -m tools.ship_data --src <shared data>`; every file is a
byte-for-byte copy of the source file named below, and `tests/test_shipped_data.py` checks each sha256.

**STS scores on these files are not comparable to published full-test numbers**: about 20% of the STS
test pairs (STS-B test 276/1379, SICK-R test 985/4927, STS12-16 1366/12544) are held out of the source
copy these files come from.

Licences are as the sources state them. Project Gutenberg books are public domain in the USA (their
header and licence text are kept and stripped at load time, as PG19 does); Stacks Project chapters are
under the GFDL 1.2 (`longlora/math/stacks_project/COPYING`), HoTT book chapters under CC BY-SA 3.0
(`longlora/math/hott_book/README.md`); WikiText sentences under CC BY-SA; SNLI under CC BY-SA 4.0; STS
scores under CC BY-SA 4.0 with per-subset sentence terms; SentEval transfer files under their original
research-use terms.

| file | role | source repository | commit | original path | licence (as stated in the source) | bytes | sha256 |
|---|---|---|---|---|---|---|---|
"""


def manifest_rows(folder: Path) -> dict[str, list[str]]:
    """The file table of ``folder/MANIFEST.md`` (the shared one or ours), by path: its cells split on ``|``."""
    rows = {}
    for line in (folder / "MANIFEST.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0].strip("`")] = cells
    return rows


def ship(src: Path, dest: Path) -> list[tuple[str, int, str]]:
    """Copy :data:`FILES` from ``src`` to ``dest`` and write ``dest/MANIFEST.md``.

    Raises:
        FileNotFoundError: a listed file is missing under ``src``.
        ValueError: a file is not in the source manifest, or its sha256 differs from the one there.
    """
    rows = manifest_rows(src)
    if dest.exists():
        shutil.rmtree(dest)
    out, lines = [], []
    for path, shipped, role in FILES:
        source = src / path
        if not source.is_file():
            raise FileNotFoundError(f"{source}: listed in tools/ship_data.py FILES but missing")
        if path not in rows:
            raise ValueError(f"{path}: not in {src / 'MANIFEST.md'}, so its source and licence are unknown")
        cells = rows[path]
        digest = file_sha256(source)
        if cells[-1].strip("`") != digest:
            raise ValueError(f"{path}: sha256 {digest} differs from the source manifest's {cells[-1]}")
        target = dest / shipped
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        repo, commit, original, licence = cells[2], cells[3], cells[4], cells[5]
        size = target.stat().st_size
        lines.append(f"| `{shipped}` | {role} | {repo} | {commit} | {original} | {licence} | {size} "
                     f"| `{digest}` |")
        out.append((shipped, size, digest))
    total = sum(size for _, size, _ in out)
    (dest / "MANIFEST.md").write_text(HEADER + "\n".join(lines) + f"\n\n{len(out)} files, {total} bytes.\n",
                                      encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default="../shared/data", help="shared-data root (with its MANIFEST.md)")
    parser.add_argument("--dest", default="data/shipped")
    args = parser.parse_args(argv)
    files = ship(Path(args.src), Path(args.dest))
    print(f"{len(files)} files, {sum(s for _, s, _ in files) / 1e6:.1f} MB -> {args.dest}")


if __name__ == "__main__":
    main()
