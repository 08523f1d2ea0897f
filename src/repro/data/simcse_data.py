"""The SimCSE ``prepare`` stage: training text, STS evaluation sets and (tiny) a tokenizer, with a manifest.

Writes, under ``out_dir``:

* ``train_sentences.txt`` -- unsupervised SimCSE input, one sentence per line (wiki1m format, §3);
* ``train_triplets.csv`` -- supervised input, ``sent0,sent1,hard_neg`` (``nli_for_simcse.csv`` format, §4);
* ``sts/<task>_<split>.tsv`` -- STS12–16 (test, every subset), STS-B (dev, test), SICK-R (test) in
  the TSV layout of :mod:`repro.data.sts`, so evaluation reads one format whatever the source;
* ``tokenizer/`` -- with ``train_tokenizer``: a lower-cased BERT-style WordPiece tokenizer trained on
  the training text, loadable with ``AutoTokenizer.from_pretrained`` (for the tiny encoder);
* ``manifest.json`` -- counts, skipped pairs, sha256 of every file and a fingerprint of the inputs.

A rerun whose fingerprint (config + sha256 of local input files) matches the manifest, and whose
outputs are intact, does nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from repro.data.nli import load_nli_hub, read_nli_csv, synthetic_triplets, write_nli_csv
from repro.data.sentences import load_wiki1m_hub, read_sentence_file, synthetic_sentences
from repro.data.sts import TASK_KEYS, STSTask, load_sts_hub, read_sts_task, synthetic_sts_task, write_sts_tsv
from repro.fingerprint import file_sha256
from repro.fingerprint import fingerprint as content_fingerprint
from repro.schemas import SimCSEDataConfig

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SOURCES = ("synthetic", "local", "hub")
OBJECTIVES = ("unsup", "sup", "both")
# SICK-R's trial split is the reference's SICK-R dev set (model selection with --eval_avg_sts);
# the hub path reads SICK-R's test split only (SICK_test_annotated.txt from SimCSE's senteval.tar).
EVAL_SPLITS = MappingProxyType({"STSBenchmark": ("dev", "test"), "SICKRelatedness": ("trial", "test")})
HUB_EVAL_SPLITS = MappingProxyType({"STSBenchmark": ("dev", "test"), "SICKRelatedness": ("test",)})
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_simcse_data_config(cfg: Mapping[str, Any] | SimCSEDataConfig) -> SimCSEDataConfig:
    """Validate a mapping (plain dict or OmegaConf node) into :class:`SimCSEDataConfig`.

    Raises:
        KeyError: an unknown key (named).
        ValueError: a bad ``source``/``objective``/``sts_layout`` or a missing local path (named).
    """
    if not isinstance(cfg, SimCSEDataConfig):
        known = {f.name for f in fields(SimCSEDataConfig)}
        items = dict(cfg.items())
        unknown = sorted(set(items) - known)
        if unknown:
            raise KeyError(f"unknown simcse.data key(s) {unknown}; known: {sorted(known)}")
        cfg = SimCSEDataConfig(**items)
    if cfg.source not in SOURCES:
        raise ValueError(f"simcse.data.source={cfg.source!r}; expected one of {SOURCES}")
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"simcse.data.objective={cfg.objective!r}; expected one of {OBJECTIVES}")
    if cfg.sts_layout not in ("senteval", "tsv"):
        raise ValueError(f"simcse.data.sts_layout={cfg.sts_layout!r}; expected 'senteval' or 'tsv'")
    if cfg.source == "local":
        needed = ["sts_root"] + (["wiki_path"] if cfg.objective != "sup" else []) \
            + (["nli_path"] if cfg.objective != "unsup" else [])
        for key in needed:
            if not getattr(cfg, key):
                raise ValueError(f"simcse.data.{key} must be set when source='local'")
    return cfg


def register_configs() -> None:
    """Register :class:`SimCSEDataConfig` as ``sentence_data/schema`` in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="sentence_data", name="schema", node=SimCSEDataConfig,
                                 package="simcse.data")


def train_wordpiece_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 2000,
                              lowercase: bool = True, model_max_length: int = 128):
    """Build a BERT-style WordPiece tokenizer from ``texts`` and save it where ``AutoTokenizer`` finds it.

    Same pipeline as ``bert-base-uncased``: BERT normaliser (lower-casing), BERT pre-tokeniser,
    WordPiece with ``##`` continuation, ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]`` templates.
    The vocabulary is the special tokens, every character seen (alone and as a ``##`` continuation, so
    every word can be spelt), then the most frequent words (ties in alphabetical order) up to
    ``vocab_size``. It is built here rather than by ``tokenizers``' ``WordPieceTrainer``, whose
    token ids (and, on ties, tokens) change from one process to the next (Rust's randomly seeded
    hash maps): the same texts always give the same ``tokenizer.json``, so a rerun of the stage
    reproduces its output and everything trained on it.

    Returns:
        The wrapped ``transformers`` tokenizer (already saved to ``out_dir``).
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _span in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    alphabet = sorted({ch for word in counts for ch in word})
    vocab: dict[str, int] = {}
    for token in [*SPECIAL_TOKENS, *alphabet, *(f"##{ch}" for ch in alphabet)]:
        vocab.setdefault(token, len(vocab))
    for word, _n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.decoder = decoders.WordPiece(prefix="##")
    wrapped = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]",
                                pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
                                do_lower_case=lowercase, model_max_length=model_max_length)
    wrapped.save_pretrained(str(out_dir))
    return wrapped


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    return file_sha256(path)


def input_fingerprint(cfg: SimCSEDataConfig) -> str:
    """sha256 over the config and the bytes of every local input file (paths sorted)."""
    paths: list[Path] = []
    if cfg.source == "local":
        paths = [Path(p) for p in (cfg.wiki_path, cfg.nli_path) if p]
        root = Path(cfg.sts_root)
        if not root.is_dir():
            raise FileNotFoundError(f"simcse.data.sts_root is not a folder: {root}")
        paths += sorted(p for p in root.rglob("*") if p.is_file())
    return content_fingerprint({"format": FORMAT_VERSION, **asdict(cfg)}, files=paths)


def _is_current(out_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    path = out_dir / "manifest.json"
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("fingerprint") != fingerprint:
        return None
    for rel, meta in manifest.get("files", {}).items():
        target = out_dir / rel
        if not target.is_file() or sha256_file(target) != meta["sha256"]:
            return None
    return manifest


def _load_sts(cfg: SimCSEDataConfig, name: str) -> STSTask:
    splits = EVAL_SPLITS.get(name)
    if cfg.source == "synthetic":
        return synthetic_sts_task(name, cfg.seed, cfg.n_sts_pairs)
    if cfg.source == "local":
        try:
            return read_sts_task(name, cfg.sts_root, cfg.sts_layout, splits=splits)
        except FileNotFoundError:
            if name != "SICKRelatedness":
                raise
            # SICK-R dev (trial) is optional: only model selection with eval_avg_sts needs it
            log.info("no SICK-R trial split under %s; reading SICK-R test only", cfg.sts_root)
            return read_sts_task(name, cfg.sts_root, cfg.sts_layout, splits=HUB_EVAL_SPLITS[name])
    return load_sts_hub(name, splits=HUB_EVAL_SPLITS.get(name), stsb_repo=cfg.hub_stsb_repo, local_root=cfg.hub_local_root)


def prepare_simcse_data(cfg: Mapping[str, Any] | SimCSEDataConfig, out_dir: str | Path) -> dict[str, Any]:
    """Write the SimCSE training and evaluation data described in the module docstring.

    Args:
        cfg: a :class:`SimCSEDataConfig` or a mapping with its fields (``simcse.data``).
        out_dir: output folder (created).

    Returns:
        The manifest (also written to ``out_dir/manifest.json``); ``"up_to_date": True`` is added to
        the returned copy when nothing had to be rewritten.
    """
    cfg = build_simcse_data_config(cfg)
    out_dir = Path(out_dir)
    fingerprint = input_fingerprint(cfg)
    current = _is_current(out_dir, fingerprint)
    if current is not None:
        log.info("%s is up to date (fingerprint %s)", out_dir, fingerprint[:12])
        return {**current, "up_to_date": True}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    counts: dict[str, Any] = {}
    written: list[Path] = []
    texts: list[str] = []
    if cfg.objective in ("unsup", "both"):
        if cfg.source == "synthetic":
            sentences = synthetic_sentences(cfg.n_sentences, cfg.seed)
        elif cfg.source == "local":
            sentences = read_sentence_file(cfg.wiki_path, cfg.max_sentences)
        else:
            sentences = load_wiki1m_hub(cfg.hub_repo, cfg.hub_wiki_file, cfg.max_sentences, cfg.hub_revision,
                                        cfg.hub_local_root)
        path = out_dir / "train_sentences.txt"
        path.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
        counts["train_sentences"], texts = len(sentences), texts + sentences
        written.append(path)
    if cfg.objective in ("sup", "both"):
        if cfg.source == "synthetic":
            triplets = synthetic_triplets(cfg.n_triplets, cfg.seed + 1)
        elif cfg.source == "local":
            triplets = read_nli_csv(cfg.nli_path, cfg.max_triplets)
        else:
            triplets = load_nli_hub(cfg.hub_repo, cfg.hub_nli_file, cfg.max_triplets, cfg.hub_revision,
                                    cfg.hub_local_root)
        path = out_dir / "train_triplets.csv"
        write_nli_csv(triplets, path)
        counts["train_triplets"] = len(triplets)
        texts += [s for t in triplets for s in t]
        written.append(path)
    sts_counts, skipped, notes = {}, {}, [cfg.note] if cfg.note else []
    for name in TASK_KEYS:
        task = _load_sts(cfg, name)
        written += write_sts_tsv(task, out_dir / "sts")
        sts_counts[task.key] = {sub: len(p.gold) for sub, p in task.items()}
        skipped[task.key] = {k: v for k, v in task.skipped.items() if v}
        if task.note and task.note not in notes:
            notes.append(task.note)
    counts["sts"] = sts_counts
    if cfg.train_tokenizer:
        tok_dir = out_dir / "tokenizer"
        train_wordpiece_tokenizer(texts, tok_dir, cfg.vocab_size, cfg.lowercase)
        written += sorted(p for p in tok_dir.iterdir() if p.is_file())
    manifest = {
        "format_version": FORMAT_VERSION, "fingerprint": fingerprint, "source": cfg.source,
        "note": "; ".join(notes), "config": asdict(cfg), "counts": counts,
        "skipped_without_gold": {k: v for k, v in skipped.items() if v},
        "files": {p.relative_to(out_dir).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                  for p in sorted(written)},
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest
