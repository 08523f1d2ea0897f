"""LongLoRA language-modelling data: tokenise, pack into blocks, and cache with checksums.

Mirrors the LongLoRA reference's data handling (§4.1): training documents are joined with EOS, tokenised
and cut into fixed-length blocks of the training context, pad-free (the remainder that does not fill a
block is dropped); evaluation sets (PG19 / proof-pile test) are flat token streams of the concatenated test
documents, which the reference stores as a uint16 token file for sliding-window perplexity.

:func:`prepare_lm_data` writes, under ``out_dir``::

    tokenizer/            the tokenizer (AutoTokenizer-loadable) + repro_fingerprint.json
    train.npy             [N, context_length] packed blocks
    eval/<name>.npy       1-D token stream per evaluation set
    <array>.npy.json      sidecar: sha256 of the file bytes, dtype, shape, token count, config fingerprint

A rerun whose fingerprints match the sidecars reuses the cache without reading any source; a corrupted
file is reported with its name. All writes go through a temporary file and ``os.replace``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from repro.data.text_sources import SourceConfig, build_source, source_identity
from repro.data.tokenizer import TokenizerConfig, build_tokenizer, token_dtype_for
from repro.fingerprint import file_sha256, fingerprint as content_fingerprint

FORMAT_VERSION = 1
TOKENIZER_FINGERPRINT_FILE = "repro_fingerprint.json"
_EVAL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class LMDataConfig:
    """``longlora.data``: the training source, named evaluation sources, and the tokenizer.

    Attributes:
        train: documents to pack into training blocks (RedPajama in the paper).
        eval_sets: name -> documents for a perplexity token stream (PG19 and proof-pile test in the paper).
        tokenizer: the tokenizer config.
        max_train_tokens: cap on the joined training stream before packing (0 = no cap).
        max_eval_tokens: cap on each evaluation stream (0 = no cap).
    """

    train: SourceConfig = field(default_factory=SourceConfig)
    eval_sets: dict[str, SourceConfig] = field(default_factory=dict)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    max_train_tokens: int = 0
    max_eval_tokens: int = 0


def lm_data_config_from_dict(data: Any) -> LMDataConfig:
    """Validate a plain / OmegaConf mapping against :class:`LMDataConfig` (a typo'd key fails, named)."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(LMDataConfig), data)
    return OmegaConf.to_object(merged)


def register_lm_data_config(name: str = "lm_data_schema", group: str = "data") -> None:
    """Store :class:`LMDataConfig` in Hydra's ConfigStore (idempotent: storing again overwrites)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group=group, name=name, node=LMDataConfig, package="longlora.data")


def _fingerprint(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (the identity of a cache entry)."""
    return content_fingerprint({"format": FORMAT_VERSION, "obj": obj})


def tokenize_documents(
    docs: Iterable[str], tokenizer: PreTrainedTokenizerBase, max_tokens: int = 0, batch_size: int = 64
) -> list[np.ndarray]:
    """Tokenise documents without special tokens, stopping once ``max_tokens`` (incl. separators) is met.

    Returns:
        One int32 array of token ids per document read (half the memory of int64 at RedPajama scale).
    """
    out: list[np.ndarray] = []
    total = 0
    batch: list[str] = []

    def flush() -> bool:
        nonlocal total
        ids = tokenizer(batch, add_special_tokens=False)["input_ids"]
        for row in ids:
            out.append(np.asarray(row, dtype=np.int32))
            total += len(row) + 1  # + the EOS that follows it; the joined stream is total - 1 long
            if max_tokens and total > max_tokens:
                return True
        batch.clear()
        return False

    for doc in docs:
        batch.append(doc)
        if len(batch) >= batch_size and flush():
            return out
    if batch:
        flush()
    return out


def _join_with_eos(
    token_lists: Iterable[Iterable[int]], eos_id: int, max_tokens: int = 0, dtype=np.int64
) -> np.ndarray:
    """``d0 EOS d1 EOS ... d_last`` as one ``dtype`` array, truncated to ``max_tokens`` (0 = all)."""
    pieces: list[np.ndarray] = []
    eos = np.array([eos_id], dtype=dtype)
    for i, toks in enumerate(token_lists):
        if i:
            pieces.append(eos)
        pieces.append(np.asarray(toks, dtype=dtype).reshape(-1))
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)
    return stream[:max_tokens] if max_tokens else stream


def pack_documents(
    token_lists: Iterable[Iterable[int]], block_size: int, eos_id: int, max_tokens: int = 0, dtype=np.int64
) -> np.ndarray:
    """Join documents with EOS and cut the stream into pad-free blocks (LongLoRA §4.1 training data).

    Args:
        token_lists: token ids per document.
        block_size: tokens per block (the training context length).
        eos_id: the separator placed between consecutive documents.
        max_tokens: cap on the joined stream before cutting (0 = none).
        dtype: dtype of the result (the cache's uint16 / uint32 avoids a copy).

    Returns:
        array [N, block_size], N = len(stream) // block_size; the trailing remainder is dropped.

    Raises:
        ValueError: fewer tokens than one block (both counts are given).
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    stream = _join_with_eos(token_lists, eos_id, max_tokens, dtype)  # [T]
    n_blocks = len(stream) // block_size
    if n_blocks == 0:
        raise ValueError(
            f"too few tokens: {len(stream)} available, {block_size} needed for one block of "
            f"context_length={block_size}"
        )
    return stream[: n_blocks * block_size].reshape(n_blocks, block_size)  # [T'] -> [N, block_size]


def token_stream(
    docs: Iterable[str], tokenizer: PreTrainedTokenizerBase, max_tokens: int = 0, dtype=np.int64
) -> np.ndarray:
    """An evaluation token stream: documents tokenised and concatenated with EOS between them.

    This is the flat token file LongLoRA's perplexity evaluation slides its window over (PG19 / proof-pile
    test); no BOS is added and no EOS follows the last document.

    Returns:
        ``dtype`` array [T], at most ``max_tokens`` long when ``max_tokens`` > 0.
    """
    lists = tokenize_documents(docs, tokenizer, max_tokens)
    return _join_with_eos(lists, tokenizer.eos_token_id, max_tokens, dtype)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _sha256_file(path: Path) -> str:
    return file_sha256(path)


def _atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary sibling, fsync it, then ``os.replace`` it onto ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_array(path: Path, array: np.ndarray, fingerprint: str, config: Any) -> dict:
    """Write ``array`` as ``.npy`` and its checksum sidecar, both atomically; return the sidecar dict.

    The old sidecar is removed first, so an interrupted write never pairs a new array with an old record.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sidecar(path).unlink(missing_ok=True)
    _atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))
    meta = {"file": path.name, "sha256": _sha256_file(path), "dtype": str(array.dtype),
            "shape": list(array.shape), "num_tokens": int(array.size),
            "fingerprint": fingerprint, "config": config}
    _atomic_write(_sidecar(path), lambda f: f.write(json.dumps(meta, indent=2, sort_keys=True).encode()))
    return meta


def _read_sidecar(path: Path) -> dict:
    side = _sidecar(path)
    try:
        return json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        msg = f"corrupt cache {path}: unreadable sidecar {side} ({exc}); delete it and rerun"
        raise ValueError(msg) from None


def load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """Load a cached array after checking its sha256, dtype and shape against the sidecar.

    Raises:
        FileNotFoundError: the array or its sidecar is missing (named).
        ValueError: ``corrupt cache <file> ... delete it and rerun`` on any mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cached array {path} does not exist; run the prepare stage")
    if not _sidecar(path).is_file():
        raise FileNotFoundError(f"cached array {path} has no sidecar {_sidecar(path).name}; delete it, rerun")
    meta = _read_sidecar(path)
    actual = _sha256_file(path)
    if actual != meta.get("sha256"):
        raise ValueError(
            f"corrupt cache {path}: sha256 {actual[:12]}… does not match the recorded "
            f"{str(meta.get('sha256'))[:12]}…; delete it and rerun"
        )
    array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if str(array.dtype) != meta.get("dtype") or list(array.shape) != meta.get("shape"):
        raise ValueError(
            f"corrupt cache {path}: dtype/shape {array.dtype}/{list(array.shape)} differ from the sidecar "
            f"{meta.get('dtype')}/{meta.get('shape')}; delete it and rerun"
        )
    return array


def _cached(path: Path, fingerprint: str) -> Optional[np.ndarray]:
    """The verified cached array when its sidecar carries ``fingerprint``; ``None`` when it must be built."""
    if not (path.is_file() and _sidecar(path).is_file()):
        return None
    if _read_sidecar(path).get("fingerprint") != fingerprint:
        return None
    return load_array(path, mmap=True)


def _reuse_or_build(path: Path, build, fingerprint_of: dict) -> tuple[np.ndarray, bool]:
    """The cached array whose sidecar matches ``fingerprint_of``, else ``build()`` written to ``path``."""
    fingerprint = _fingerprint(fingerprint_of)
    array = _cached(path, fingerprint)
    if array is not None:
        return array, True
    array = build()
    write_array(path, array, fingerprint, fingerprint_of)
    return array, False


def _prepare_tokenizer(
    cfg: LMDataConfig, tok_dir: Path, fingerprint: str, base_dir: Optional[Path],
    model_name_or_path: Optional[str], model_gguf_file: Optional[str],
) -> tuple[PreTrainedTokenizerBase, bool]:
    """Load the cached tokenizer when its fingerprint matches (files checksummed), else build and save it.

    The folder is written under a temporary name and renamed into place, so it is never half-written.
    """
    marker = tok_dir / TOKENIZER_FINGERPRINT_FILE
    saved = json.loads(marker.read_text()) if marker.is_file() else {}
    if saved.get("fingerprint") == fingerprint:
        for name, sha in saved.get("sha256", {}).items():
            if not (tok_dir / name).is_file() or _sha256_file(tok_dir / name) != sha:
                raise ValueError(f"corrupt cache {tok_dir / name}: checksum mismatch; delete it and rerun")
        return AutoTokenizer.from_pretrained(tok_dir), True
    texts = build_source(cfg.train, base_dir) if cfg.tokenizer.kind == "bpe" else None
    tokenizer = build_tokenizer(cfg.tokenizer, texts, model_name_or_path, model_gguf_file)
    tmp = tok_dir.with_name(f".{tok_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    sums = {p.name: _sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    (tmp / TOKENIZER_FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": fingerprint, "sha256": sums}))
    shutil.rmtree(tok_dir, ignore_errors=True)
    os.replace(tmp, tok_dir)
    return tokenizer, False


@dataclass(frozen=True)
class PreparedLMData:
    """What :func:`prepare_lm_data` produced: paths, sizes, and which parts came from the cache."""

    tokenizer_dir: Path
    train_path: Path
    eval_paths: dict[str, Path]
    num_train_blocks: int
    eval_tokens: dict[str, int]
    reused: dict[str, bool]

    def to_dict(self) -> dict:
        """JSON-friendly form (paths as strings) for a metrics or summary file."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def prepare_lm_data(
    cfg: LMDataConfig,
    out_dir: Path,
    context_length: int,
    base_dir: Optional[Path] = None,
    model_name_or_path: Optional[str] = None,
    model_gguf_file: Optional[str] = None,
) -> PreparedLMData:
    """Build (or reuse) the tokenizer, the packed training blocks and the evaluation streams.

    Args:
        cfg: the data config (``longlora.data``).
        out_dir: output folder (layout in the module docstring).
        context_length: training block size (``longlora.train.context_length``); each evaluation stream
            must hold at least ``context_length + 1`` tokens (one window plus its shifted label).
        base_dir: folder against which relative local paths resolve (default: cwd, the repo root).
        model_name_or_path: the model's path, for ``tokenizer.kind='pretrained'`` with null ``name_or_path``.
        model_gguf_file: the model's GGUF file inside ``model_name_or_path``.

    Raises:
        ValueError: too few tokens (available vs needed, source named), a bad eval-set name, a corrupt cache.
    """
    if context_length < 1:
        raise ValueError(f"context_length must be >= 1, got {context_length}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_ref = [model_name_or_path, model_gguf_file] if cfg.tokenizer.name_or_path is None else None
    tok_fp = _fingerprint({
        "tokenizer": dataclasses.asdict(cfg.tokenizer),
        "model": model_ref if cfg.tokenizer.kind == "pretrained" else None,
        "bpe_texts": source_identity(cfg.train, base_dir) if cfg.tokenizer.kind == "bpe" else None,
    })
    reused: dict[str, bool] = {}
    tokenizer, reused["tokenizer"] = _prepare_tokenizer(
        cfg, out_dir / "tokenizer", tok_fp, base_dir, model_name_or_path, model_gguf_file
    )
    dtype = token_dtype_for(tokenizer)

    def pack_train() -> np.ndarray:
        lists = tokenize_documents(build_source(cfg.train, base_dir), tokenizer, cfg.max_train_tokens)
        try:
            return pack_documents(lists, context_length, tokenizer.eos_token_id, cfg.max_train_tokens, dtype)
        except ValueError as exc:
            raise ValueError(f"training source (kind={cfg.train.kind!r}): {exc}") from None

    train_path = out_dir / "train.npy"
    blocks, reused["train"] = _reuse_or_build(train_path, pack_train, {
        "tokenizer": tok_fp, "source": source_identity(cfg.train, base_dir),
        "max_train_tokens": cfg.max_train_tokens, "context_length": context_length,
    })
    eval_paths: dict[str, Path] = {}
    eval_tokens: dict[str, int] = {}
    for name, src in cfg.eval_sets.items():
        if not _EVAL_NAME.match(name):
            raise ValueError(f"eval_sets key {name!r} must match {_EVAL_NAME.pattern} (it names a file)")
        eval_paths[name] = out_dir / "eval" / f"{name}.npy"
        stream, reused[f"eval/{name}"] = _reuse_or_build(
            eval_paths[name],
            lambda src=src: token_stream(build_source(src, base_dir), tokenizer, cfg.max_eval_tokens, dtype),
            {"tokenizer": tok_fp, "source": source_identity(src, base_dir),
             "max_eval_tokens": cfg.max_eval_tokens},
        )
        if len(stream) < context_length + 1:
            raise ValueError(
                f"too few tokens in eval set {name!r} (kind={src.kind!r}): {len(stream)} available, "
                f"{context_length + 1} needed (context_length={context_length} + 1)"
            )
        eval_tokens[name] = int(len(stream))

    return PreparedLMData(
        tokenizer_dir=out_dir / "tokenizer",
        train_path=train_path,
        eval_paths=eval_paths,
        num_train_blocks=int(blocks.shape[0]),
        eval_tokens=eval_tokens,
        reused=reused,
    )


class PackedBlocks(torch.utils.data.Dataset):
    """The packed training blocks of ``train.npy`` as causal-LM examples (labels = inputs; the model shifts).

    The file is checksum-verified once, then memory-mapped lazily in each process, so DataLoader workers
    share the page cache instead of copying the array.
    """

    def __init__(self, path: Path, verify: bool = True):
        self.path = Path(path)
        blocks = load_array(self.path, mmap=True) if verify else np.load(self.path, mmap_mode="r")
        if blocks.ndim != 2:
            raise ValueError(f"{self.path}: expected packed blocks [N, context], got shape {blocks.shape}")
        self.shape = tuple(blocks.shape)
        self._blocks: Optional[np.ndarray] = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_blocks": None}

    @property
    def blocks(self) -> np.ndarray:
        if self._blocks is None:
            self._blocks = np.load(self.path, mmap_mode="r")
        return self._blocks

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(np.asarray(self.blocks[index], dtype=np.int64))  # [context]
        return {"input_ids": ids, "labels": ids.clone()}
