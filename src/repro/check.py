"""Validate the config before DVC touches any output.

    python -m repro.check                      # params.yaml as `dvc repro` will read it
    python -m repro.check --params other.yaml
    python -m repro.check attention=s2 longlora.attention.group_size_ratio=0.3   # compose conf/ first

``dvc repro`` removes a stage's outputs before it runs the stage's command, so a config that only
fails inside the command (a value of the wrong type, a group size that does not divide the context)
costs the previous results. ``make repro`` runs this check first. It does what every stage does at
start-up (:func:`repro.config.validate`: keys, types, missing and allowed values), then the checks that
need derived values, for the main config and for every ablation variant and SimCSE run:

* S2-Attn: the group size ``int(context * group_size_ratio)`` divides the training context, and is
  even where a half-group shift is used (:func:`repro.derived.group_size_for`);
* Position Interpolation: positive contexts (:func:`repro.derived.pi_factor`);
* the tiny base model is pretrained on the training blocks cut to ``original_context``, which
  must divide the training context;
* each ``simcse.runs.<run>`` merges over ``simcse.train`` (:func:`repro.simcse_runs.run_train_config`).

Exit status 0 when everything holds; 1 with one line per problem, each naming the config key. The
check imports neither torch, transformers nor lightning (the schemas are :mod:`repro.schemas`, the
derived values :mod:`repro.derived`); its time is OmegaConf merging the variants.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def derived_problems(cfg: DictConfig, where: str = "") -> list[str]:
    """Problems in the values derived from a validated config (empty when there are none).

    Args:
        cfg: a config validated by :func:`repro.config.validate`.
        where: prefix for the messages (e.g. the ablation variant), empty for the main config.
    """
    from repro.config import to_dataclass
    from repro.derived import group_size_for, pi_factor
    from repro.schemas import S2AttnConfig

    prefix = f"{where}: " if where else ""
    problems = []
    ll = cfg.longlora
    context = int(ll.train.context_length)
    original = int(ll.model.original_context)
    try:
        attn = to_dataclass(ll.attention, S2AttnConfig)
        if attn.pattern != "full":
            group_size_for(context, attn.group_size_ratio, needs_half=attn.shift != "none")
    except ValueError as exc:
        problems.append(f"{prefix}longlora.attention (longlora.train.context_length={context}): {exc}")
    try:
        pi_factor(context, original)
    except ValueError as exc:
        problems.append(f"{prefix}longlora.model.original_context / longlora.train.context_length: {exc}")
    if ll.model.source == "tiny" and original > 0 and context % original:
        problems.append(f"{prefix}longlora.train.context_length={context} is not a multiple of "
                        f"longlora.model.original_context={original} (the tiny base is pretrained on cut blocks)")
    return problems


def check_config(cfg: DictConfig) -> list[str]:
    """Every problem of a composed config: schema errors, then derived checks, ablation variants and SimCSE runs."""
    from repro.config import ConfigError, validate
    from repro.simcse_runs import run_train_config
    from repro.workflows.ablations import variant_config, variant_names

    try:
        valid = validate(cfg)
    except ConfigError as exc:
        return [str(exc)]
    problems = derived_problems(valid)
    main_problems = set(problems)
    for run in valid.simcse.runs:
        try:
            run_train_config(valid, run)
        except ConfigError as exc:
            problems.append(str(exc))
    for ablation in (k for k in valid.ablations if k not in ("name", "variant")):
        try:
            names = variant_names(valid, ablation)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        longlora_kind = str(valid.ablations[ablation].kind).startswith("longlora")
        for variant in names:
            try:
                vcfg = variant_config(valid, ablation, variant)
            except ConfigError as exc:
                problems.append(str(exc))
                continue
            if longlora_kind:  # a variant's own problems; those it inherits are reported once above
                where = f"ablations.{ablation}.variants.{variant}"
                problems += [f"{where}: {p}" for p in derived_problems(vcfg) if p not in main_problems]
    return problems


def load(params: Path | None, overrides: list[str]) -> DictConfig:
    """``params`` as it stands, or ``conf/`` composed with ``overrides`` (as ``dvc exp run -S`` would)."""
    if overrides:
        import tempfile

        from repro.compose import compose_params

        with tempfile.TemporaryDirectory() as tmp:
            return OmegaConf.load(compose_params(Path(tmp) / "params.yaml", overrides))
    params = params or Path("params.yaml")
    if not params.is_file():
        raise SystemExit(f"params file not found: {params}")
    return OmegaConf.load(params)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides: compose conf/ with them instead of reading params")
    parser.add_argument("--params", type=Path, default=None, help="the composed config to check (default params.yaml)")
    args = parser.parse_args(argv)
    try:
        cfg = load(args.params, args.overrides)
    except Exception as exc:  # noqa: BLE001  (composition errors of every kind name the key themselves)
        print(f"config does not compose: {exc}", file=sys.stderr)
        return 1
    problems = check_config(cfg)
    for line in problems:
        print(f"config error: {line}", file=sys.stderr)
    if not problems:
        print(f"config ok ({args.params or ('conf/ + ' + ' '.join(args.overrides) if args.overrides else 'params.yaml')})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
