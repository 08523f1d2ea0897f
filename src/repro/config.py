"""Typed validation of the composed config.

The YAML tree under ``conf/`` is composed by Hydra (by DVC's Hydra integration for ``params.yaml``,
or by the pipeline scripts directly). Composition already rejects overrides of keys that do not
exist (Hydra's struct mode), e.g. ``-S longlora.train.max_stpes=3``. :func:`validate` then checks
every section against the dataclass that the library code consumes (all of them in
:mod:`repro.schemas`), so a misspelt key in a YAML file, a wrong type, a missing value or a value
outside its allowed set (each dataclass's ``__post_init__``) fails at start-up with the key's full
name, never after a model has been loaded. Neither this module nor the schemas import torch,
transformers or lightning.

The schemas are not put into Hydra's ConfigStore: DVC composes ``conf/`` without importing this
package, so YAML files must compose on their own.
"""

from __future__ import annotations

import importlib

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# dotted key -> "module:Class" of the dataclass that the code consuming it expects.
SECTION_SCHEMAS: dict[str, str] = {
    "run": "repro.schemas:RunConfig",
    "wandb": "repro.schemas:WandbConfig",
    "longlora.data": "repro.schemas:LMDataConfig",
    "longlora.model": "repro.schemas:ModelConfig",
    "longlora.attention": "repro.schemas:S2AttnConfig",
    "longlora.adapter": "repro.schemas:AdapterConfig",
    "longlora.base": "repro.schemas:BaseTrainConfig",
    "longlora.train": "repro.schemas:TrainConfig",
    "longlora.eval": "repro.schemas:LMEvalConfig",
    "simcse.encoder": "repro.schemas:EncoderConfig",
    "simcse.data": "repro.schemas:SimCSEDataConfig",
    "simcse.train": "repro.schemas:SimCSETrainConfig",
    "simcse.pretrain": "repro.schemas:SimCSEPretrainConfig",
    "simcse.eval": "repro.schemas:SimCSEEvalConfig",
    "simcse.transfer": "repro.schemas:TransferConfig",
}

TOP_LEVEL_KEYS = {"seed", "run", "wandb", "longlora", "simcse", "ablations"}


class ConfigError(ValueError):
    """A config value is missing, misspelt or of the wrong type; the message names the key."""


def _schema(spec: str) -> type:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def register_sections(extra: dict[str, str]) -> dict[str, str]:
    """The section table with ``extra`` entries added (used by the SimCSE workflow)."""
    return {**SECTION_SCHEMAS, **extra}


def validate(cfg: DictConfig, sections: dict[str, str] | None = None) -> DictConfig:
    """Check ``cfg`` against the typed schemas; return a resolved, read-only copy.

    Raises:
        ConfigError: naming the offending key (``longlora.train.max_stpes``) and the reason.
    """
    sections = sections or _all_sections()
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"config does not resolve: {exc}") from exc
    out = OmegaConf.create(container)
    unknown = set(out.keys()) - TOP_LEVEL_KEYS
    if unknown:
        raise ConfigError(f"unknown top-level config key(s): {sorted(unknown)}; expected {sorted(TOP_LEVEL_KEYS)}")
    for dotted, spec in sections.items():
        node = OmegaConf.select(out, dotted)
        if node is None:
            raise ConfigError(f"missing config section '{dotted}'")
        try:
            typed = OmegaConf.merge(OmegaConf.structured(_schema(spec)), node)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", "") or ""
            where = f"{dotted}.{key}" if key else dotted
            raise ConfigError(f"invalid config at '{where}': {exc.msg if hasattr(exc, 'msg') else exc}") from exc
        if not OmegaConf.missing_keys(typed):
            try:  # the dataclass's own checks (__post_init__): allowed values, ranges
                OmegaConf.to_object(typed)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"invalid config at '{dotted}': {exc}") from exc
        OmegaConf.update(out, dotted, typed, merge=False)
    for dotted in sections:
        missing = OmegaConf.missing_keys(OmegaConf.select(out, dotted))
        if missing:
            raise ConfigError(f"missing value(s) for {sorted(f'{dotted}.{m}' for m in missing)}")
    OmegaConf.set_readonly(out, True)
    return out


def _all_sections() -> dict[str, str]:
    return dict(SECTION_SCHEMAS)


def to_dataclass(node: DictConfig, spec_or_cls) -> object:
    """Instantiate the dataclass for a validated section (``OmegaConf.to_object``)."""
    cls = _schema(spec_or_cls) if isinstance(spec_or_cls, str) else spec_or_cls
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), node))
