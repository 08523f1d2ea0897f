"""Content fingerprints: the one place cache keys and input identities are hashed.

A fingerprint is the sha256 of the canonical JSON of a value (keys sorted; OmegaConf nodes turned
into plain containers), optionally followed by the paths and bytes of input files, so that a changed
config or a changed input file gives a new key. Used for the prepared-data caches
(:mod:`repro.data.lm_data`, :mod:`repro.data.simcse_data`) and the stage folders of
:mod:`repro.workflows.longlora`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    """``value`` with every OmegaConf node (at any depth) turned into a plain dict or list."""
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    """The JSON text a fingerprint hashes: sorted keys, OmegaConf nodes as containers, other objects as ``str``."""
    return json.dumps(_plain(value), sort_keys=True, default=str)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(value: Any, files: Iterable[str | Path] = (), length: int | None = None) -> str:
    """Hex sha256 over ``canonical_json(value)``, then ``path NUL sha256(bytes)`` of each file in order.

    Args:
        value: any JSON-able value (dicts, lists, OmegaConf nodes, scalars).
        files: input files whose content belongs to the identity; missing files raise.
        length: keep only the first ``length`` hex digits (e.g. 12 for folder names).

    Raises:
        FileNotFoundError: naming the first of ``files`` that is not a file.
    """
    digest = hashlib.sha256(canonical_json(value).encode())
    for path in files:
        if not Path(path).is_file():
            raise FileNotFoundError(f"input file not found: {path}")
        digest.update(str(path).encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()[:length] if length else digest.hexdigest()
