"""Ablation variants: one config diff each (``ablations.<name>.variants``), run the same way by DVC
(``ablate_<name>@<variant>`` stages) and by Hydra multirun (one job per variant).

A variant trains and evaluates in its own folder (``models/ablations/<name>/<variant>/``), reusing the
pipeline's prepared data and base model when its config leaves them unchanged, and writes one flat
JSON, ``metrics/ablations/<name>/<variant>.json``, with ``status`` ``ok`` or ``failed`` (the report
shows failed and missing variants, it never drops them).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from repro.cli import StageContext
from repro.config import ConfigError, validate
from repro.stages import reuse_or_cache
from repro.tracking import write_csv, write_metrics

log = logging.getLogger(__name__)
KINDS = ("longlora", "longlora_steps", "simcse")


def variant_names(cfg: DictConfig, ablation: str) -> list[str]:
    """The variants of an ablation, in config order."""
    spec = _spec(cfg, ablation)
    return list(spec.variants.keys())


def _spec(cfg: DictConfig, ablation: str) -> DictConfig:
    known = [k for k in cfg.ablations if k not in ("name", "variant")]
    if ablation not in known:
        raise ConfigError(f"unknown ablation '{ablation}'; ablations has {known}")
    spec = cfg.ablations[ablation]
    if spec.kind not in KINDS:
        raise ConfigError(f"ablations.{ablation}.kind={spec.kind!r}; expected one of {KINDS}")
    return spec


def variant_config(cfg: DictConfig, ablation: str, variant: str) -> DictConfig:
    """The root config with the variant's diff merged in, validated (errors name the variant's key)."""
    spec = _spec(cfg, ablation)
    if variant not in spec.variants:
        raise ConfigError(f"unknown variant '{variant}' of ablation '{ablation}'; has {list(spec.variants)}")
    merged = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(cfg)), spec.variants[variant] or {})
    merged.ablations.name, merged.ablations.variant = ablation, variant  # run names and W&B groups say so
    try:
        return validate(merged)
    except ConfigError as exc:
        raise ConfigError(f"ablations.{ablation}.variants.{variant}: {exc}") from exc


def _variant_context(ctx: StageContext, ablation: str, variant: str) -> StageContext:
    out = ctx.out_root if ctx.sweep else ctx.out_root / "models" / "ablations" / ablation / variant
    return replace(ctx, out_root=out, group=f"ablation-{ablation}", sweep=True)


def run_variant(cfg: DictConfig, ctx: StageContext, ablation: str, variant: str) -> dict[str, Any]:
    """Train + evaluate one variant; write its metrics JSON (status ``failed`` with the error on failure).

    Under DVC a failure is raised after the JSON is written (the stage fails); in a Hydra sweep it is
    logged and the sweep goes on.
    """
    metrics_dir = ctx.out_root / cfg.run.metrics_dir / "ablations" / ablation
    head = {"ablation": ablation, "variant": variant}
    try:
        vcfg = variant_config(cfg, ablation, variant)
        spec = _spec(cfg, ablation)
        vctx = _variant_context(ctx, ablation, variant)
        root = ctx.out_root
        curve = root / cfg.run.plots_dir / "ablations" / ablation / f"{variant}.csv"
        run_info = metrics_dir / "runs" / f"{variant}.json"
        if spec.kind == "simcse":
            metrics = _simcse(vcfg, vctx, spec, curve, run_info)
        else:
            metrics = _longlora(vcfg, vctx, spec, ablation, curve, run_info)
        result = {"status": "ok", **head, **metrics}
        _log_summary(vcfg, vctx, spec, result, curve)
        write_metrics(metrics_dir / f"{variant}.json", result)
        return result
    except Exception as exc:  # record the failure, never drop the variant
        log.exception("ablation %s variant %s failed", ablation, variant)
        write_metrics(metrics_dir / f"{variant}.json", {"status": "failed", **head, "error": f"{type(exc).__name__}: {exc}"})
        if not ctx.sweep:
            raise
        return {"status": "failed", **head}


def _log_summary(cfg: DictConfig, ctx: StageContext, spec: DictConfig, result: dict, curve: Path) -> None:
    """One W&B run (job_type ``ablate``) per variant holding its final metrics and curve."""
    import csv

    from repro.tracking import init_run, make_run_name

    paper = "simcse" if spec.kind == "simcse" else "longlora"
    tags = {"ablation": result["ablation"], "variant": result["variant"]}
    run = init_run(cfg, paper, "ablate", make_run_name(paper, "ablate", cfg.run.profile, tags), ctx.group)
    try:
        if curve.is_file() and spec.kind == "longlora_steps":
            with curve.open() as f:
                for row in csv.DictReader(f):
                    run.log({"ablate/step": int(row["step"]), "ablate/ppl": float(row["ppl"])})
        run.summary.update({f"ablate/{k}": v for k, v in result.items() if isinstance(v, (int, float))})
    finally:
        run.finish()


def _copy(src: Path, dest: Path) -> None:
    if src.is_file() and src.resolve() != dest.resolve():
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(src.read_text())


# --- LongLoRA ---------------------------------------------------------------------------------------


def eval_set_for(spec: DictConfig, data: DictConfig) -> str:
    """The evaluation set an ablation scores on: the one playing its paper table's ``eval_role``.

    Raises:
        KeyError: the role (``ablations.<name>.eval_role``) is missing or has no set in ``longlora.data.roles``.
    """
    role = spec.get("eval_role")
    if not role:
        raise KeyError(f"ablation {spec.get('ref', '?')!r} has no eval_role (pg19_validation, pg19_test, proof_pile_test)")
    roles = data.get("roles") or {}
    if role not in roles:
        raise KeyError(f"longlora.data.roles has no {role!r} (has {sorted(roles)}); the ablation's eval_role needs it")
    return str(roles[role])


def shared_finetuned(cfg: DictConfig, paths) -> Path | None:
    """The pipeline's fine-tuned model (``models/longlora/finetuned``) when it is this variant's run, else ``None``.

    It is when the ``longlora_train`` stage stamped it with the variant's run fingerprint (base model,
    attention, adapter, train config, seed, code version, world size) and its metrics are there; a variant
    whose diff leaves the run alone (S2 in the attention ablation, LoRA+ in the LoRA ablation) then costs an
    evaluation, not a second identical training. ``dvc.yaml`` lists that model and its metrics as the
    variants' deps, so the stage order is fixed.
    """
    folder = Path(cfg.run.model_dir) / "longlora" / "finetuned"
    if folder.resolve() == paths.finetuned.resolve() or not (folder / "merged" / "config.json").is_file() \
            or not (Path(cfg.run.metrics_dir) / "longlora" / "train.json").is_file():
        return None
    return folder if reuse_or_cache(folder, paths.finetuned, paths.run_fp) == folder else None


def _longlora(cfg: DictConfig, ctx: StageContext, spec: DictConfig, ablation: str, curve: Path,
              run_info: Path) -> dict[str, Any]:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from repro.config import to_dataclass
    from repro.data.lm_data import load_array
    from repro.derived import eval_lengths
    from repro.evaluation.passkey import build_passkey_evaluator
    from repro.evaluation.perplexity import build_perplexity_evaluator
    from repro.lit.history import PeriodicPerplexity
    from repro.models.attention.registry import apply_attention, use_full_attention
    from repro.models.longlora import load_for_context
    from repro.schemas import LMEvalConfig
    from repro.workflows import longlora, longlora_eval

    ll = cfg.longlora
    longlora.prepare(cfg, ctx)
    longlora.build_base(cfg, ctx)
    paths = longlora.Paths.of(cfg, ctx)
    eval_cfg = to_dataclass(ll.eval, LMEvalConfig)
    target = int(ll.train.context_length)
    lengths = eval_lengths(eval_cfg, target)
    set_name = eval_set_for(spec, ll.data)
    stream_path = paths.data / "eval" / f"{set_name}.npy"
    tokens = torch.from_numpy(load_array(stream_path).astype(np.int64))
    ppl_eval = build_perplexity_evaluator(eval_cfg)
    device = longlora_eval.eval_device(cfg)  # the run's accelerator: a 7B model is not evaluated on the CPU
    out: dict[str, Any] = {"eval_set": set_name, "eval_role": str(spec.get("eval_role") or "")}

    curve_rows: list[dict[str, Any]] = []
    finetuned, train_info = paths.finetuned, paths.metrics / "runs" / "train.json"  # the variant's own run
    if spec.kind == "longlora_steps":
        # Step 0 = Position Interpolation without fine-tuning, with full attention and with S2-Attn.
        base = load_for_context(paths.base, target, dtype=ll.model.dtype).to(device).eval()
        curve_rows.append({"step": 0, "ppl": ppl_eval.evaluate(base, tokens, target).ppl})
        apply_attention(base, OmegaConf.to_container(ll.attention))
        out[f"step0/ppl_s2@{target}"] = ppl_eval.evaluate(base, tokens, target, press=False).ppl
        del base
        callback = PeriodicPerplexity(int(spec.eval_every_n_steps), ppl_eval, tokens, target, curve_rows)
        train_metrics = longlora.train(cfg, ctx, extra_callbacks=[callback])
    elif (shared := shared_finetuned(cfg, paths)) is not None:
        # The variant's run is the pipeline's own (same base, attention, adapter, train config, seed, code and
        # world size; its diff leaves them alone): evaluate that model instead of training it a second time.
        pipeline_metrics = Path(cfg.run.metrics_dir) / "longlora"
        train_metrics = json.loads((pipeline_metrics / "train.json").read_text())
        finetuned, train_info = shared, pipeline_metrics / "runs" / "train.json"
        paths.finetuned.mkdir(parents=True, exist_ok=True)
        (paths.finetuned / "SHARED.json").write_text(json.dumps(
            {"finetuned": str(shared), "run_fingerprint": paths.run_fp}, indent=2) + "\n")
        out["shared_with"] = "longlora_train"
    else:
        train_metrics = longlora.train(cfg, ctx)
    out.update({k: train_metrics[k] for k in ("train/final_loss", "train/tokens_per_s", "train/trainable_params",
                                              "train/peak_mem_mb", "train/steps", "train/wall_s")})
    model = AutoModelForCausalLM.from_pretrained(finetuned / "merged", attn_implementation="sdpa",
                                                 dtype=getattr(torch, ll.model.dtype)).to(device).eval()
    for n in lengths:
        out[f"ppl@{n}"] = ppl_eval.evaluate(model, tokens, n).ppl  # full attention at test time
    if ablation == "longlora_attention" and ll.attention.pattern != "full":
        apply_attention(model, OmegaConf.to_container(ll.attention))  # tested with its own pattern too
        out[f"ppl_own@{target}"] = ppl_eval.evaluate(model, tokens, target, press=False).ppl
        use_full_attention(model)
    tokenizer = AutoTokenizer.from_pretrained(paths.data / "tokenizer")
    passkey_eval = build_passkey_evaluator(tokenizer, eval_cfg)
    inside = passkey_eval.points(target)  # the reference's test points within the training context
    # a control ablation scores every point (its passkey control); the others the last point only
    points = inside if spec.get("passkey_curve", False) else inside[-1:]
    if points:
        pk = passkey_eval.evaluate(model, points)
        for p in points:
            out[f"passkey@{p}"] = pk.accuracy[p]
            out[f"passkey_digits@{p}"] = pk.accuracy_digits[p]
            out[f"passkey_tokens@{p}"] = pk.mean_tokens[p]
    if curve_rows:
        if curve_rows[-1]["step"] != train_metrics["train/steps"]:
            curve_rows.append({"step": train_metrics["train/steps"], "ppl": out[f"ppl@{target}"]})
        write_csv(curve, curve_rows)
    _copy(train_info, run_info)
    return out


# --- SimCSE -----------------------------------------------------------------------------------------


def _simcse(cfg: DictConfig, ctx: StageContext, spec: DictConfig, curve: Path, run_info: Path) -> dict[str, Any]:
    from repro.workflows import simcse

    run = spec.get("run", "unsup")
    seeds = list(spec.get("seeds") or [])
    if seeds:  # each variant over several seeds, in this one process (mean, /std, /per_seed)
        merged = simcse.run_seeds(cfg, ctx, run, seeds)
        first = replace(ctx, out_root=ctx.out_root / f"seed{seeds[0]}")
        paths = simcse.Paths.of(cfg, first, run)
    else:
        simcse.prepare(cfg, ctx)
        merged = {**simcse.train(cfg, ctx, run), **simcse.evaluate(cfg, ctx, run)}
        paths = simcse.Paths.of(cfg, ctx, run)
    _copy(paths.plots / f"train_{run}.csv", curve)
    _copy(paths.metrics / "runs" / f"train_{run}.json", run_info)
    out = {k: v for k, v in merged.items() if isinstance(v, (int, float)) and not (
        isinstance(v, float) and math.isinf(v))}
    return out
