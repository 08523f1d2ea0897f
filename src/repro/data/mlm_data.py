"""Masked-language-model blocks for pretraining the tiny SimCSE encoder (``simcse_pretrain``).

BERT's pretraining data (Devlin et al. 2019, §3.1 and Appendix A.1), at tiny scale: the training
sentences are tokenised, joined with [SEP] and cut into blocks of ``block_length`` tokens that start with
[CLS]. Each example is a *stream position*: position ``p`` is block ``p mod N`` with a mask drawn from
``numpy.random.default_rng([seed, p])``, so every pass over a block masks it afresh (RoBERTa's dynamic
masking) and a resumed run draws exactly the masks an uninterrupted one would. Of the tokens chosen with
probability ``mask_prob`` (special tokens never), 80% become [MASK], 10% a random ordinary token and 10%
stay; labels are -100 everywhere else, the ignore index of the model's loss.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase


def pack_sentences(sentences: list[str], tokenizer: PreTrainedTokenizerBase, block_length: int) -> np.ndarray:
    """``[N, block_length]`` int64 blocks: [CLS] then the [SEP]-joined sentence stream (the remainder dropped).

    Raises:
        ValueError: ``block_length`` < 2, or fewer tokens than one block (the counts are given).
    """
    if block_length < 2:
        raise ValueError(f"block_length must be >= 2, got {block_length}")
    ids = tokenizer(sentences, add_special_tokens=False)["input_ids"]
    sep, cls = tokenizer.sep_token_id, tokenizer.cls_token_id
    if sep is None or cls is None:
        raise ValueError("MLM blocks need a tokenizer with [CLS] and [SEP] tokens (a BERT-style WordPiece)")
    stream = np.fromiter((t for row in ids for t in (*row, sep)), dtype=np.int64)
    body = block_length - 1
    n = len(stream) // body
    if n < 1:
        raise ValueError(f"{len(stream)} tokens from {len(sentences)} sentences: fewer than one MLM block "
                         f"of {block_length}")
    blocks = stream[: n * body].reshape(n, body)
    return np.concatenate([np.full((n, 1), cls, dtype=np.int64), blocks], axis=1)


class MaskedBlocks(torch.utils.data.Dataset):
    """``length`` stream positions over ``blocks``, each a freshly masked block (see the module docstring).

    Items are ``{"input_ids", "labels"}`` of shape ``[block_length]``.
    """

    def __init__(self, blocks: np.ndarray, tokenizer: PreTrainedTokenizerBase, length: int, seed: int,
                 mask_prob: float = 0.15):
        if blocks.ndim != 2 or len(blocks) == 0:
            raise ValueError(f"MaskedBlocks needs [N, T] blocks with N >= 1, got shape {blocks.shape}")
        self.blocks, self.length, self.seed, self.mask_prob = blocks, int(length), int(seed), float(mask_prob)
        self.mask_id = tokenizer.mask_token_id
        if self.mask_id is None:
            raise ValueError("MLM needs a tokenizer with a [MASK] token")
        self.special = np.array(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
        self.vocab = len(tokenizer)
        ordinary = np.setdiff1d(np.arange(self.vocab), self.special)
        self.ordinary = ordinary

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        ids = self.blocks[position % len(self.blocks)]
        rng = np.random.default_rng([self.seed, int(position)])
        chosen = (rng.random(ids.shape) < self.mask_prob) & ~np.isin(ids, self.special)
        kind = rng.random(ids.shape)
        inputs = ids.copy()
        inputs[chosen & (kind < 0.8)] = self.mask_id
        swap = chosen & (kind >= 0.8) & (kind < 0.9)
        inputs[swap] = self.ordinary[rng.integers(0, len(self.ordinary), int(swap.sum()))]
        labels = np.where(chosen, ids, -100)
        return {"input_ids": torch.from_numpy(inputs), "labels": torch.from_numpy(labels)}
