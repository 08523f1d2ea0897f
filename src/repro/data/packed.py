"""The packed training blocks of ``train.npy`` as a map-style dataset (memory-mapped, checksum-verified once)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from repro.data.token_cache import load_array


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
        self._blocks: np.ndarray | None = None

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
