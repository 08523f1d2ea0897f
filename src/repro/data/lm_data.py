"""LongLoRA language-modelling data: tokenise, pack into blocks, and cache with checksums.

Mirrors the LongLoRA reference's data handling (§4.1): training documents are joined with EOS, tokenised
and cut into fixed-length blocks of the training context, pad-free (the remainder that does not fill a
block is dropped); evaluation sets (PG19 / proof-pile test) are flat token streams of the concatenated test
documents, which the reference stores as a uint16 token file for sliding-window perplexity.

:func:`prepare_lm_data` writes, under ``out_dir``::

    tokenizer/            the tokenizer (AutoTokenizer-loadable) + repro_fingerprint.json
    train.npy             [N, context_length] packed blocks
    pretrain/manifest.json  what the base model is pretrained on: ``base_blocks``, or null (a pretrained model)
    pretrain/train.npy    [N', original_context] packed blocks for pretraining a base (``base_blocks``)
    eval/<name>.npy       1-D token stream per evaluation set
    <array>.npy.json      sidecar: sha256 of the file bytes, dtype, shape, token count, config fingerprint

A rerun whose fingerprints match the sidecars reuses the cache without reading any source; a corrupted
file is reported with its name. All writes go through a temporary file and ``os.replace``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from repro.data.packed import PackedBlocks  # noqa: F401  (re-exported)
from repro.data.text_sources import build_source, source_identity
from repro.data.token_cache import load_array, read_sidecar, sha256_file, sidecar, write_array
from repro.data.tokenizer import build_tokenizer, token_dtype_for
from repro.fingerprint import fingerprint as content_fingerprint
from repro.schemas import LMDataConfig

FORMAT_VERSION = 2
TOKENIZER_FINGERPRINT_FILE = "repro_fingerprint.json"
_EVAL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def lm_data_config_from_dict(data: Any) -> LMDataConfig:
    """Validate a plain / OmegaConf mapping against :class:`LMDataConfig` (a typo'd key fails, named)."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(LMDataConfig), data)
    return OmegaConf.to_object(merged)


def register_lm_data_config(name: str = "lm_data_schema", group: str = "data") -> None:
    """Store :class:`LMDataConfig` in Hydra's ConfigStore (idempotent: storing again overwrites)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group=group, name=name, node=LMDataConfig, package="longlora.data")


def train_token_cap(max_steps: int, global_batch: int, context_length: int, margin: float) -> int:
    """Tokens a run consumes, ``steps x global batch x context``, plus ``margin`` of that (rounded up)."""
    return math.ceil(int(max_steps) * int(global_batch) * int(context_length) * (1.0 + float(margin)))


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


def select_documents(lists: list[np.ndarray], min_tokens: int = 0, sample: int = 0, seed: int = 0) -> list[np.ndarray]:
    """Documents of at least ``min_tokens`` tokens, then ``sample`` of them drawn without replacement.

    Mirrors how ``test_sampled_data.bin`` was built from proof-pile's test split (128 documents drawn at
    random among those with at least 32768 tokens). The drawn documents keep their original order; when
    fewer than ``sample`` qualify, all of them are kept.
    """
    keep = [i for i, toks in enumerate(lists) if len(toks) >= min_tokens]
    if sample and len(keep) > sample:
        keep = sorted(random.Random(seed).sample(keep, sample))
    return [lists[i] for i in keep]


def whole_documents(lists: list[np.ndarray], max_tokens: int) -> list[np.ndarray]:
    """The leading documents whose EOS-joined length stays within ``max_tokens`` (0 = all; at least one)."""
    if not max_tokens:
        return lists
    out, total = [], -1
    for toks in lists:
        total += len(toks) + 1
        if out and total > max_tokens:
            break
        out.append(toks)
    return out


def token_stream(
    docs: Iterable[str], tokenizer: PreTrainedTokenizerBase, max_tokens: int = 0, dtype=np.int64,
    min_doc_tokens: int = 0, sample_docs: int = 0, sample_seed: int = 0,
) -> np.ndarray:
    """An evaluation token stream: documents tokenised and concatenated with EOS between them.

    This is the flat token file LongLoRA's perplexity evaluation slides its window over (``pg19/*.bin``,
    ``proof-pile/test_sampled_data.bin``); no BOS is added and no EOS follows the last document. Documents
    are first selected (:func:`select_documents`), then capped to whole documents (:func:`whole_documents`).

    Returns:
        ``dtype`` array [T].
    """
    lists = select_documents(tokenize_documents(docs, tokenizer), min_doc_tokens, sample_docs, sample_seed)
    if not lists:
        raise ValueError(f"no document has at least min_doc_tokens={min_doc_tokens} tokens")
    return _join_with_eos(whole_documents(lists, max_tokens), tokenizer.eos_token_id, 0, dtype)


def _cached(path: Path, fingerprint: str) -> np.ndarray | None:
    """The verified cached array when its sidecar carries ``fingerprint``; ``None`` when it must be built."""
    if not (path.is_file() and sidecar(path).is_file()):
        return None
    if read_sidecar(path).get("fingerprint") != fingerprint:
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
    cfg: LMDataConfig, tok_dir: Path, fingerprint: str, base_dir: Path | None,
    model_name_or_path: str | None, model_gguf_file: str | None,
) -> tuple[PreTrainedTokenizerBase, bool]:
    """Load the cached tokenizer when its fingerprint matches (files checksummed), else build and save it.

    The folder is written under a temporary name and renamed into place, so it is never half-written.
    """
    marker = tok_dir / TOKENIZER_FINGERPRINT_FILE
    saved = json.loads(marker.read_text()) if marker.is_file() else {}
    if saved.get("fingerprint") == fingerprint:
        for name, sha in saved.get("sha256", {}).items():
            if not (tok_dir / name).is_file() or sha256_file(tok_dir / name) != sha:
                raise ValueError(f"corrupt cache {tok_dir / name}: checksum mismatch; delete it and rerun")
        return AutoTokenizer.from_pretrained(tok_dir), True
    texts = build_source(cfg.train, base_dir) if cfg.tokenizer.kind == "bpe" else None
    tokenizer = build_tokenizer(cfg.tokenizer, texts, model_name_or_path, model_gguf_file)
    tmp = tok_dir.with_name(f".{tok_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    sums = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
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
    base_train_path: Path | None = None

    def to_dict(self) -> dict:
        """JSON-friendly form (paths as strings) for a metrics or summary file."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))


def prepare_lm_data(
    cfg: LMDataConfig,
    out_dir: Path,
    context_length: int,
    base_dir: Path | None = None,
    model_name_or_path: str | None = None,
    model_gguf_file: str | None = None,
    base_blocks: tuple[int, int] | None = None,
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
        base_blocks: ``(original_context, max_tokens)``: also write ``pretrain/train.npy``, the training
            source packed at the base model's original context and capped at ``max_tokens``, for pretraining
            a model that has no checkpoint (the tiny profile). It depends on the source, the tokenizer and
            these two numbers only, not on the fine-tuning context or schedule, so every fine-tuning
            context starts from the same base (LongLoRA Table 3 extends one Llama-2). ``pretrain/`` (with its
            ``manifest.json``) is written either way, so the base stage can depend on it alone.

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

    if cfg.max_train_tokens < 0:
        raise ValueError("longlora.data.max_train_tokens=-1 (derived) must be resolved with train_token_cap first")

    def pack_train() -> np.ndarray:
        source = build_source(cfg.train, base_dir)
        if cfg.train.kind == "hub" and not cfg.train.streaming:  # fine-tune.py: datasets.map(..., num_proc)
            lists = source.token_lists(tokenizer, cfg.num_proc, cfg.max_train_tokens)
        else:
            lists = tokenize_documents(source, tokenizer, cfg.max_train_tokens)
        try:
            return pack_documents(lists, context_length, tokenizer.eos_token_id, cfg.max_train_tokens, dtype)
        except ValueError as exc:
            raise ValueError(f"training source (kind={cfg.train.kind!r}): {exc}") from None

    train_path = out_dir / "train.npy"
    blocks, reused["train"] = _reuse_or_build(train_path, pack_train, {
        "tokenizer": tok_fp, "source": source_identity(cfg.train, base_dir),
        "max_train_tokens": cfg.max_train_tokens, "context_length": context_length,
    })
    pretrain_dir = out_dir / "pretrain"
    pretrain_dir.mkdir(parents=True, exist_ok=True)
    base_path = None
    if base_blocks is None:
        for stale in ("train.npy", "train.npy.json"):
            (pretrain_dir / stale).unlink(missing_ok=True)
    else:
        base_context, base_max = (int(x) for x in base_blocks)

        def pack_base() -> np.ndarray:
            lists = tokenize_documents(build_source(cfg.train, base_dir), tokenizer, base_max)
            try:
                return pack_documents(lists, base_context, tokenizer.eos_token_id, base_max, dtype)
            except ValueError as exc:
                raise ValueError(f"base pretraining data (training source kind={cfg.train.kind!r}): {exc}") from None

        base_path = pretrain_dir / "train.npy"
        _reuse_or_build(base_path, pack_base, {
            "tokenizer": tok_fp, "source": source_identity(cfg.train, base_dir),
            "max_train_tokens": base_max, "context_length": base_context,
        })
    manifest = {"pretraining_data": None if base_blocks is None else {
        "file": "train.npy", "original_context": base_blocks[0], "max_tokens": base_blocks[1]}}
    tmp = pretrain_dir / f".manifest.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, pretrain_dir / "manifest.json")
    eval_paths: dict[str, Path] = {}
    eval_tokens: dict[str, int] = {}
    for name, src in cfg.eval_sets.items():
        if not _EVAL_NAME.match(name):
            raise ValueError(f"eval_sets key {name!r} must match {_EVAL_NAME.pattern} (it names a file)")
        eval_paths[name] = out_dir / "eval" / f"{name}.npy"
        stream, reused[f"eval/{name}"] = _reuse_or_build(
            eval_paths[name],
            lambda src=src: token_stream(build_source(src, base_dir), tokenizer, cfg.max_eval_tokens, dtype,
                                         src.min_doc_tokens, src.sample_docs, src.sample_seed),
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
        base_train_path=base_path,
    )
