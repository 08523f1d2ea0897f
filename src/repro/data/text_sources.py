"""Document sources for LongLoRA's language-modelling data: Hugging Face hub, local files, synthetic.

LongLoRA (§4.1) fine-tunes on the RedPajama 1T sample and evaluates perplexity on the PG19 and proof-pile
test splits. Every source here is a re-iterable object that yields documents as ``str``:

* :class:`HubSource` streams a hub dataset (``datasets.load_dataset(..., streaming=True)``).
* :class:`LocalSource` reads a file or a directory: ``*.txt`` / ``*.tex`` files are one document each,
  ``*.jsonl`` files hold one document per line in a text field. Project Gutenberg books keep only the text
  between the ``*** START OF`` and ``*** END OF`` marker lines, dropping the header and licence as PG19 does.
* :class:`SyntheticSource` yields the deterministic corpus of :mod:`repro.data.synthetic`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

from repro.data.synthetic import generate_documents
from repro.schemas import SourceConfig

SOURCE_KINDS = ("synthetic", "local", "hub")
TEXT_SUFFIXES = (".txt", ".tex")
JSONL_SUFFIXES = (".jsonl",)
GUTENBERG_START = re.compile(r"^\s*\*{3}\s*START OF", re.IGNORECASE)
GUTENBERG_END = re.compile(r"^\s*\*{3}\s*END OF", re.IGNORECASE)


def decode_utf8(data: bytes, name: str, errors: str = "strict") -> str:
    """Decode ``data`` as UTF-8, naming ``name`` and the byte offset of the first bad sequence.

    With ``errors="replace"`` every undecodable sequence becomes U+FFFD and one warning reports how many
    were replaced. A leading byte-order mark is dropped.

    Raises:
        ValueError: ``errors="strict"`` and the bytes are not valid UTF-8, or ``errors`` is unknown.
    """
    if errors not in ("strict", "replace"):
        raise ValueError(f"errors must be 'strict' or 'replace', got {errors!r} (for {name})")
    parts: list[str] = []
    pos, n_bad, first_bad = 0, 0, -1
    while True:
        try:
            parts.append(data[pos:].decode("utf-8"))
            break
        except UnicodeDecodeError as exc:
            offset = pos + exc.start
            if errors == "strict":
                raise ValueError(
                    f"{name}: not valid UTF-8 at byte offset {offset} ({exc.reason}); "
                    "fix the file or set errors: replace"
                ) from None
            first_bad = offset if first_bad < 0 else first_bad
            parts.append(data[pos:offset].decode("utf-8"))
            parts.append("\ufffd")
            n_bad += 1
            pos += exc.end
    if n_bad:
        warnings.warn(
            f"{name}: replaced {n_bad} undecodable UTF-8 sequence(s), the first at byte offset {first_bad}",
            stacklevel=2,
        )
    return "".join(parts).removeprefix("\ufeff")


def strip_gutenberg_boilerplate(text: str) -> str:
    """Keep the lines strictly between the ``*** START OF`` and ``*** END OF`` markers (``***START OF`` too).

    Mirrors PG19's books, which carry no Project Gutenberg header or licence. Text without a START marker
    is returned unchanged; a missing END marker keeps everything after START.
    """
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if GUTENBERG_START.match(line)), None)
    if start is None:
        return text
    end = next(
        (i for i in range(start + 1, len(lines)) if GUTENBERG_END.match(lines[i])),
        len(lines),
    )
    return "".join(lines[start + 1 : end]).strip("\r\n")


class HubSource:
    """Stream documents from a Hugging Face dataset, as LongLoRA reads RedPajama, PG19 and proof-pile.

    ``fine-tune.py`` loads the whole RedPajama sample (``load_dataset(...)``, then ``Trainer`` samples it at
    random); ``streaming: true`` fetches only the rows read. A local folder in the hub repository's layout
    loads with the same builder (``hub_name`` = the folder), which is how the tests run this path offline.
    """

    def __init__(self, cfg: SourceConfig):
        if not cfg.hub_name:
            raise ValueError("source kind 'hub' needs hub_name (e.g. emozilla/pg19-test, or json)")
        self.cfg = cfg

    def dataset(self):
        """The ``datasets`` dataset (an ``IterableDataset`` when streaming) the rows come from."""
        import datasets

        cfg = self.cfg
        kwargs = {"data_files": cfg.hub_data_files} if cfg.hub_data_files else {}
        return datasets.load_dataset(cfg.hub_name, cfg.hub_config, split=cfg.hub_split, streaming=cfg.streaming,
                                     **kwargs)

    def rows(self):
        """The dataset, shuffled with ``shuffle_seed`` when it is set, cut to ``max_docs``."""
        cfg = self.cfg
        rows = self.dataset()
        if cfg.shuffle_seed is not None:
            rows = rows.shuffle(seed=cfg.shuffle_seed, **({"buffer_size": 10_000} if cfg.streaming else {}))
        if cfg.max_docs and not cfg.streaming and hasattr(rows, "select"):
            rows = rows.select(range(min(cfg.max_docs, len(rows))))
        return rows

    def token_lists(self, tokenizer, num_proc: int = 1, max_tokens: int = 0, chunk_docs: int = 20_000) -> list:
        """Token ids per document via ``datasets.map(batched=True, num_proc=...)``, as ``fine-tune.py`` tokenises.

        Runs over the shuffled rows chunk by chunk and stops after the chunk that passes ``max_tokens``
        (documents plus one separator each), so a cap never tokenises the whole 1T sample.
        """
        import numpy as np

        field = self.cfg.text_field
        rows = self.rows()
        if field not in rows.column_names:
            raise KeyError(f"{self.cfg.hub_name}[{self.cfg.hub_split}]: no text field {field!r} "
                           f"(fields: {sorted(rows.column_names)})")

        def encode(batch):
            return {"input_ids": tokenizer(batch[field], add_special_tokens=False)["input_ids"]}

        out, total = [], 0
        for lo in range(0, len(rows), chunk_docs):
            part = rows.select(range(lo, min(lo + chunk_docs, len(rows))))
            part = part.map(encode, batched=True, num_proc=num_proc if num_proc > 1 else None,
                            remove_columns=part.column_names)
            for ids in part["input_ids"]:
                out.append(np.asarray(ids, dtype=np.int32))
                total += len(ids) + 1
            if max_tokens and total > max_tokens:
                break
        return out

    def __iter__(self) -> Iterator[str]:
        cfg = self.cfg
        rows = self.rows()
        for i, row in enumerate(rows):
            if cfg.max_docs and i >= cfg.max_docs:
                return
            if cfg.text_field not in row:
                raise KeyError(
                    f"{cfg.hub_name}[{cfg.hub_split}] row {i}: no text field {cfg.text_field!r} "
                    f"(fields: {sorted(row)})"
                )
            yield row[cfg.text_field]


class LocalSource:
    """Read documents from a local file or directory (``.txt`` / ``.tex`` whole files, ``.jsonl`` lines)."""

    def __init__(self, cfg: SourceConfig, base_dir: Path | None = None):
        if not cfg.path:
            raise ValueError("source kind 'local' needs path (a file or a directory)")
        path = Path(cfg.path)
        self.path = path if path.is_absolute() else Path(base_dir or Path.cwd()) / path
        if not self.path.exists():
            raise FileNotFoundError(f"local source path {cfg.path!r} does not exist (resolved: {self.path})")
        self.cfg = cfg

    def files(self) -> list[Path]:
        """The files read, in sorted order.

        Raises:
            FileNotFoundError: a directory without any matching file (names directory and glob).
        """
        if self.path.is_file():
            return [self.path]
        pattern = self.cfg.glob or "*"
        suffixes = TEXT_SUFFIXES + JSONL_SUFFIXES
        found = sorted(p for p in self.path.glob(pattern) if p.is_file() and p.suffix in suffixes)
        found = found[self.cfg.shard_index :: self.cfg.num_shards]
        if not found:
            raise FileNotFoundError(
                f"local source directory {self.path} has no {'/'.join(suffixes)} files matching "
                f"glob {pattern!r}"
            )
        return found

    def content_digest(self) -> str:
        """sha256 over the names and bytes of the files read, so a changed file invalidates a cache."""
        digest = hashlib.sha256()
        for file in self.files():
            name = file.relative_to(self.path) if self.path.is_dir() else file.name
            digest.update(str(name).encode() + b"\0" + hashlib.sha256(file.read_bytes()).digest())
        return digest.hexdigest()

    def _read_text(self, file: Path) -> str:
        data = file.read_bytes()
        if not data.strip():
            raise ValueError(f"local source file {file} is empty")
        return decode_utf8(data, str(file), self.cfg.errors)

    def _jsonl_docs(self, file: Path) -> Iterator[str]:
        field = self.cfg.text_field
        # split on "\n" only: JSON strings may hold raw U+2028 that str.splitlines would break on
        for lineno, line in enumerate(self._read_text(file).split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{file}:{lineno}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or field not in record:
                raise KeyError(f"{file}:{lineno}: missing text field {field!r}")
            if not isinstance(record[field], str):
                raise TypeError(f"{file}:{lineno}: field {field!r} is not a string")
            yield record[field]

    def __iter__(self) -> Iterator[str]:
        count = 0
        for file in self.files():
            if file.suffix in JSONL_SUFFIXES:
                docs = self._jsonl_docs(file)
            else:
                text = self._read_text(file)
                if self.cfg.strip_gutenberg and file.suffix == ".txt":
                    text = strip_gutenberg_boilerplate(text)
                docs = iter([text])
            for doc in docs:
                if self.cfg.max_docs and count >= self.cfg.max_docs:
                    return
                count += 1
                yield doc


class SyntheticSource:
    """The deterministic synthetic corpus of :mod:`repro.data.synthetic` (tiny CPU profile)."""

    def __init__(self, cfg: SourceConfig):
        self.cfg = cfg

    def __iter__(self) -> Iterator[str]:
        cfg = self.cfg
        num_docs = min(cfg.num_docs, cfg.max_docs) if cfg.max_docs else cfg.num_docs
        return generate_documents(
            seed=cfg.seed,
            num_docs=num_docs,
            passkey_fraction=cfg.passkey_fraction,
            num_facts=cfg.num_facts,
            code_digits=cfg.code_digits,
            filler_sentences=cfg.filler_sentences,
            passkey_max_filler=cfg.passkey_max_filler,
        )


def source_identity(cfg: SourceConfig, base_dir: Path | None = None) -> dict:
    """The source's config plus, for local files, a digest of their contents (a cache fingerprint input)."""
    ident = dataclasses.asdict(cfg)
    if cfg.kind == "local":
        ident["content_sha256"] = LocalSource(cfg, base_dir).content_digest()
    elif cfg.kind == "synthetic":
        from repro.data.synthetic import GENERATOR_VERSION

        ident["generator_version"] = GENERATOR_VERSION
    return ident


def build_source(cfg: SourceConfig, base_dir: Path | None = None):
    """Make the source ``cfg.kind`` names; ``base_dir`` resolves relative local paths (default: cwd).

    Raises:
        ValueError: an unknown ``kind``.
    """
    if cfg.kind == "hub":
        return HubSource(cfg)
    if cfg.kind == "local":
        return LocalSource(cfg, base_dir)
    if cfg.kind == "synthetic":
        return SyntheticSource(cfg)
    raise ValueError(f"source kind must be one of {SOURCE_KINDS}, got {cfg.kind!r}")
