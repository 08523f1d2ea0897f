"""What the stage workflows share: the folder stamps.

A finished stage folder (prepared data, a base model) holds ``.fingerprint``, the fingerprint
(:mod:`repro.fingerprint`) of the config that built it. A Hydra sweep job or an ablation variant
reuses the pipeline's folder when the stamp matches its own config, else a content-addressed cache
folder (see :class:`repro.workflows.longlora.Paths`). The workflows' own config sections
(``longlora.base``, ``simcse.eval``) are in :mod:`repro.schemas` with all the others.
"""

from __future__ import annotations

from pathlib import Path

STAMP = ".fingerprint"


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
