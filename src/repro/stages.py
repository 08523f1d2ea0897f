"""What the stage workflows share: their own config sections and the folder stamps.

``BaseTrainConfig`` (``longlora.base``) and ``SimCSEEvalConfig`` (``simcse.eval``) live here rather
than in :mod:`repro.workflows` so that :mod:`repro.config` can name them without importing the
workflows (which import :mod:`repro.config`).

A finished stage folder (prepared data, a base model) holds ``.fingerprint``, the fingerprint
(:mod:`repro.fingerprint`) of the config that built it. A Hydra sweep job or an ablation variant
reuses the pipeline's folder when the stamp matches its own config, else a content-addressed cache
folder (see :class:`repro.workflows.longlora.Paths`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAMP = ".fingerprint"


@dataclass
class BaseTrainConfig:
    """``longlora.base``: how the base model is obtained.

    For a pretrained model (mini: SmolLM2, paper: Llama-2-7B) the base stage only materialises it as a
    plain Hugging Face folder. The tiny profile has no pretrained checkpoint, so the tiny Llama is
    first trained from scratch at its original context (standing in for the 4k-context pretraining
    that LongLoRA starts from), then extended.
    """

    pretrain_steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 20


@dataclass
class SimCSEEvalConfig:
    """``simcse.eval``: STS evaluation settings.

    Attributes:
        batch_size: sentences per encoder call (length-sorted, each unique sentence once).
        align_uniform: also report alignment/uniformity on STS-B (Wang & Isola; SimCSE §5).
        reference_model: the SimCSE Table 5 row printed beside each run (with the run's setting).
    """

    batch_size: int = 128
    align_uniform: bool = True
    reference_model: str = "simcse-bert-base"


def reuse_or_cache(pipeline_dir: Path, cache_dir: Path, fingerprint: str) -> Path:
    """``pipeline_dir`` when it was built from the same config (its stamp matches), else ``cache_dir``."""
    stamp = pipeline_dir / STAMP
    if stamp.is_file() and stamp.read_text().strip() == fingerprint:
        return pipeline_dir
    return cache_dir


def is_stamped(folder: Path) -> bool:
    """Whether ``folder`` was marked finished by :func:`write_stamp`."""
    return (folder / STAMP).is_file()


def write_stamp(folder: Path, fingerprint: str) -> None:
    """Mark a finished folder with the fingerprint of the config that built it."""
    (folder / STAMP).write_text(fingerprint + "\n")
