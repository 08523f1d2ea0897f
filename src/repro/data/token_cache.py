"""Checksummed ``.npy`` caches of token arrays: atomic writes, a JSON sidecar per array, verified loads.

Every array is written through a temporary file and ``os.replace``; its sidecar records the sha256 of the
file bytes, dtype, shape, token count and the fingerprint of the config that built it, so a corrupted or
stale file is reported by name instead of being read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: Path, write) -> None:
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
    sidecar(path).unlink(missing_ok=True)
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))
    meta = {"file": path.name, "sha256": sha256_file(path), "dtype": str(array.dtype),
            "shape": list(array.shape), "num_tokens": int(array.size),
            "fingerprint": fingerprint, "config": config}
    atomic_write(sidecar(path), lambda f: f.write(json.dumps(meta, indent=2, sort_keys=True).encode()))
    return meta


def read_sidecar(path: Path) -> dict:
    side = sidecar(path)
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
    if not sidecar(path).is_file():
        raise FileNotFoundError(f"cached array {path} has no sidecar {sidecar(path).name}; delete it, rerun")
    meta = read_sidecar(path)
    actual = sha256_file(path)
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


