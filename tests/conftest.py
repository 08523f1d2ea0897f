"""Shared test fixtures: offline settings, the shared real-data folder, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real offline data folder (../shared/data); tests using it skip where it is absent."""
    if not (SHARED_DATA / "MANIFEST.md").is_file():
        pytest.skip(f"shared data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def make_tiny_llama():
    """Factory for the tests' tiny random Llama (hidden 64, 2 layers, 4 heads, 2 KV heads), seeded."""

    def build(vocab_size: int, max_positions: int):
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=max_positions)
        return LlamaForCausalLM(config)

    return build


@pytest.fixture(scope="session")
def make_wordpiece_dir(tmp_path_factory):
    """Factory writing a BERT WordPiece tokenizer folder whose vocabulary is the given words."""

    def build(words: list[str]) -> Path:
        from transformers import BertTokenizerFast

        folder = tmp_path_factory.mktemp("tok")
        (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
        BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(str(folder))
        return folder

    return build


@pytest.fixture(scope="session")
def make_sentences():
    """Factory of seeded random sentences (2–8 words each) over a 21-word vocabulary.

    ``make_sentences(count, seed)`` gives the same sentences for the same arguments;
    ``make_sentences.words`` is the vocabulary, for a tokenizer from ``make_wordpiece_dir``.
    """
    words = "the a cat dog sat on mat ran quickly slowly big small red blue house tree over under park man woman".split()

    def build(count: int, seed: int = 0) -> list[str]:
        import torch

        gen = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(count):
            length = int(torch.randint(2, 9, (1,), generator=gen))
            out.append(" ".join(words[int(i)] for i in torch.randint(0, len(words), (length,), generator=gen)))
        return out

    build.words = words
    return build
