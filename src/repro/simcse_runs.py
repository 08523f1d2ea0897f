"""The named SimCSE runs: ``simcse.runs.<run>`` as diffs over ``simcse.train`` and ``simcse.encoder``.

Each named run (``unsup``, ``sup``, ...) is a small diff over ``simcse.train`` (e.g. ``mode: sup``,
``lr: 5e-5``) with an optional ``encoder:`` entry over ``simcse.encoder``. The merge is validated against
the schemas (:mod:`repro.schemas`), so an unknown key fails naming the run. Imports nothing heavy: the
config check, the stages and the report pages all read runs this way.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from repro.config import ConfigError
from repro.schemas import EncoderConfig, SimCSETrainConfig


def run_diff(cfg: DictConfig, run: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(train diff, encoder diff) of ``simcse.runs.<run>``; its ``encoder:`` entry overrides ``simcse.encoder``."""
    runs = cfg.simcse.runs
    if run not in runs:
        raise ConfigError(f"unknown SimCSE run '{run}'; simcse.runs has {sorted(runs)}")
    node = runs[run]
    diff = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    encoder = diff.pop("encoder", None) or {}
    if not isinstance(encoder, dict):
        raise ConfigError(f"simcse.runs.{run}.encoder must be a mapping of simcse.encoder keys; got {encoder!r}")
    return diff, encoder


def run_train_config(cfg: DictConfig, run: str):
    """``simcse.train`` with the named run's overrides merged in (errors name the key)."""
    diff, _ = run_diff(cfg, run)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(SimCSETrainConfig), cfg.simcse.train, diff)
        return OmegaConf.to_object(merged)
    except Exception as exc:  # omegaconf validation error: name the run's key
        raise ConfigError(f"invalid simcse.runs.{run}: {exc}") from exc


def run_encoder_config(cfg: DictConfig, run: str):
    """``simcse.encoder`` with ``simcse.runs.<run>.encoder`` merged in.

    The reference's supervised script keeps the MLP at test time (``--pooler_type cls`` without
    ``--mlp_only_train``; Table 6: 86.2 with it, 85.8 without), the unsupervised one drops it, so the
    ``sup`` run sets ``encoder: {mlp_only_train: false}`` over an encoder that says ``true``.
    """
    _, diff = run_diff(cfg, run)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(EncoderConfig), cfg.simcse.encoder, diff)
        return OmegaConf.to_object(merged)
    except Exception as exc:
        raise ConfigError(f"invalid simcse.runs.{run}.encoder: {exc}") from exc
