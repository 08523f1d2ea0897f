"""Resuming training: checkpoint folders keyed by config and code version, cleaned up by one rule.

A checkpoint written by other code must not be resumed (it would continue a run whose model, loss or
data order may have changed), so checkpoint folders are keyed by config *and* :func:`code_version`,
a digest of the library's own source files. :func:`prune_stale_checkpoints` states the cleanup rule,
:func:`resumable_run_id` keeps a resumed run in the same W&B run, and :func:`find_resume_checkpoint`
picks the newest intact checkpoint of a folder to resume from (Lightning's ``ckpt_path``).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 (12 hex digits) over the paths and bytes of every ``.py`` file of the ``repro`` package."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def prune_stale_checkpoints(parent: Path, keep: Path, max_age_days: float) -> list[Path]:
    """Delete checkpoint folders in ``parent`` other than ``keep`` untouched for more than ``max_age_days``.

    The rule (stated in the README): a finished run deletes its own folder; a killed run's folder stays so
    that a rerun of the same config and code resumes it, until it has been left alone for
    ``max_age_days`` (``run.ckpt_keep_days``), when the next training stage that uses ``parent`` removes it.
    """
    import shutil
    import time

    if not parent.is_dir():
        return []
    cutoff = time.time() - max_age_days * 86400
    removed = []
    for folder in parent.iterdir():
        if not folder.is_dir() or folder.resolve() == keep.resolve():
            continue
        newest = max((p.stat().st_mtime for p in folder.rglob("*")), default=folder.stat().st_mtime)
        if newest < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def resumable_run_id(ckpt_dir: Path) -> str:
    """The W&B run id that belongs to a checkpoint folder: made once, kept in ``<ckpt_dir>/wandb_run_id``.

    A killed run's folder survives, so its rerun resumes the same W&B run (``resume="allow"``) instead of
    leaving a crashed partial run beside a new one; a finished run deletes its folder, so a later rerun of
    the same config is a new W&B run rather than an append to a finished one.
    """
    import secrets

    ckpt_dir = Path(ckpt_dir)
    marker = ckpt_dir / "wandb_run_id"
    if marker.is_file():
        value = marker.read_text().strip()
        if value:
            return value
    value = secrets.token_hex(8)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(value + "\n")
    return value


def checkpoint_is_intact(path: str | Path) -> bool:
    """Whether a Lightning checkpoint file reads back whole: every entry of torch's zip archive passes its CRC."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False


def find_resume_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The newest intact checkpoint in ``ckpt_dir`` (``last.ckpt`` first, then the others newest first), else ``None``.

    The others are full training states too: LongLoRA's periodic ``step<N>.ckpt``, SimCSE's best-dev
    ``best-step=<N>.ckpt``. A truncated or corrupt file (a kill during the write, a full disk) is reported with
    its path and skipped, so the run falls back to the newest checkpoint that loads, or starts fresh, and says which.
    """
    import logging

    log = logging.getLogger("repro")
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return None
    candidates = [folder / "last.ckpt"] if (folder / "last.ckpt").is_file() else []
    candidates += sorted((p for p in folder.glob("*.ckpt") if p.name != "last.ckpt"), key=lambda p: p.stat().st_mtime,
                         reverse=True)
    for path in candidates:
        if checkpoint_is_intact(path):
            if path.name != "last.ckpt" and candidates[0].name == "last.ckpt":
                log.warning("resuming from %s instead", path)
            return path
        log.warning("checkpoint %s is corrupt or truncated; skipping it", path)
    if candidates:
        log.warning("no intact checkpoint in %s: training starts fresh", folder)
    return None
