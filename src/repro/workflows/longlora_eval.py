"""The LongLoRA evaluate stage: perplexity and passkey of the base with PI and of the fine-tuned model.

Reads what :mod:`repro.workflows.longlora` wrote (the prepared evaluation streams, the base model and the
merged fine-tuned model, at the same :class:`~repro.workflows.longlora.Paths`). Evaluation uses full
attention, as the paper does (S2-Attn is a training-time approximation); at the training context the
fine-tuned model is also tested with its training attention (Table 6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from repro.cli import StageContext
from repro.config import to_dataclass
from repro.tracking import init_run, make_run_name, record_run, write_csv, write_metrics
from repro.workflows.longlora import PAPER, Paths, run_tags


def eval_device(cfg: DictConfig) -> torch.device:
    """The device evaluation runs on: the run's accelerator (CUDA unless ``run.accelerator=cpu``)."""
    return torch.device("cuda" if torch.cuda.is_available() and cfg.run.accelerator != "cpu" else "cpu")


# The PI-only extension's model names: curves of their own, never mixed with the models as trained.
EXTENDED = {"base_pi": "base_pi_extended", "finetuned": "finetuned_pi_extended"}


def _eval_models(cfg: DictConfig, paths: Paths, context: int | None = None):
    """The models compared: the base with PI and no fine-tuning (step 0 of Figure 5) and the fine-tuned one.

    Without ``context`` (or at the training context) both are evaluated as trained: the base with the PI
    factor of the training context, the fine-tuned model exactly as merged. A ``context`` beyond the
    training context loads both with the PI factor for it instead (§4.2's PI-only extension: the fine-tuned
    32k model tested to 48k without further training), under the names of :data:`EXTENDED`, so those points
    form separately labelled curves and never stand in for the model as trained.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from repro.models.longlora import load_for_context, pi_factor

    ll = cfg.longlora
    trained, original = int(ll.train.context_length), int(ll.model.original_context)
    context = max(int(context or trained), trained)
    name = (lambda n: EXTENDED[n]) if context > trained else (lambda n: n)

    def finetuned():
        config = AutoConfig.from_pretrained(paths.finetuned / "merged")
        if context > trained:
            params = dict(config.rope_parameters)
            params.update(rope_type="linear", factor=float(pi_factor(context, original)))
            config.rope_parameters, config.max_position_embeddings = params, context
        return AutoModelForCausalLM.from_pretrained(paths.finetuned / "merged", config=config,
                                                    attn_implementation="sdpa", dtype=getattr(torch, ll.model.dtype))

    yield name("base_pi"), lambda: load_for_context(paths.base, context, dtype=ll.model.dtype)
    yield name("finetuned"), finetuned


def load_eval_streams(data_dir: Path) -> dict[str, torch.Tensor]:
    """The prepared evaluation token streams by set name (``eval/<name>.npy``)."""
    from repro.data.lm_data import load_array

    return {p.stem: torch.from_numpy(load_array(p).astype(np.int64)) for p in sorted((data_dir / "eval").glob("*.npy"))}


def _perplexity(model, streams, lengths, ppl_eval, model_name: str, metrics: dict, rows: list) -> None:
    for set_name, tokens in streams.items():
        for length in lengths:
            r = ppl_eval.evaluate(model, tokens, length)
            metrics[f"{model_name}/{set_name}/ppl@{length}"] = r.ppl
            metrics[f"{model_name}/{set_name}/ppl_newest@{length}"] = r.ppl_newest
            rows.append({"model": model_name, "eval_set": set_name, "length": length, "attention": "full",
                         "ppl": r.ppl, "ppl_newest": r.ppl_newest, "windows": r.n_windows,
                         "tokens_per_s": r.tokens_per_s})


def _passkey(model, passkey_eval, points, model_name: str, target: int, metrics: dict, rows: list) -> None:
    if not points:
        return
    pk = passkey_eval.evaluate(model, points)
    for row in pk.rows():
        metrics[f"{model_name}/passkey@{row['target']}"] = row["accuracy"]
        metrics[f"{model_name}/passkey_digits@{row['target']}"] = row["accuracy_digits"]
        metrics[f"{model_name}/passkey_tokens@{row['target']}"] = row["length"]  # mean prompt length of the point
        rows.append({"model": model_name, **row, "beyond_training": row["target"] > target})


def evaluate(cfg: DictConfig, ctx: StageContext) -> dict[str, Any]:
    """Perplexity (eval.py protocol + Press variant) with full attention and with S2-Attn, and passkey.

    Every evaluation set is scored at :func:`~repro.derived.eval_lengths` (up to the training
    context) with the models as trained; at the training context the fine-tuned model is also tested with
    its training attention (Table 6's "S2-Attn" column beside the "full attention" one). Passkey runs at the
    reference's test points up to :func:`~repro.derived.passkey_max_tokens`: points within
    the training context with the models as trained, points beyond it -- and perplexity at
    :func:`~repro.derived.extension_lengths` -- with the PI-only extension to the furthest of
    them (§4.2, Figure 4), as curves of their own (:data:`EXTENDED`).
    """
    from transformers import AutoTokenizer

    from repro.derived import eval_lengths, extension_lengths, passkey_max_tokens
    from repro.evaluation.passkey import build_passkey_evaluator
    from repro.evaluation.perplexity import build_perplexity_evaluator
    from repro.models.attention.registry import apply_attention
    from repro.schemas import LMEvalConfig

    ll = cfg.longlora
    paths = Paths.of(cfg, ctx)
    eval_cfg = to_dataclass(ll.eval, LMEvalConfig)
    target = int(ll.train.context_length)
    tokenizer = AutoTokenizer.from_pretrained(paths.data / "tokenizer")
    streams = load_eval_streams(paths.data)
    ppl_eval = build_perplexity_evaluator(eval_cfg)
    passkey_eval = build_passkey_evaluator(tokenizer, eval_cfg)
    points = passkey_eval.points(passkey_max_tokens(eval_cfg, target))
    inside, beyond = [p for p in points if p <= target], [p for p in points if p > target]
    ext_lengths = extension_lengths(eval_cfg, target)
    extension = max(beyond + ext_lengths, default=None)
    device = eval_device(cfg)
    metrics: dict[str, Any] = {}
    ppl_rows, passkey_rows = [], []
    run = init_run(cfg, PAPER, "evaluate", make_run_name(PAPER, "evaluate", cfg.run.profile, run_tags(cfg)), ctx.group)
    try:
        for model_name, load in _eval_models(cfg, paths):
            model = load().to(device).eval()  # full (SDPA) attention: S2-Attn is a training-time approximation
            _perplexity(model, streams, eval_lengths(eval_cfg, target), ppl_eval, model_name, metrics, ppl_rows)
            _passkey(model, passkey_eval, inside, model_name, target, metrics, passkey_rows)
            if ll.attention.pattern != "full":
                apply_attention(model, OmegaConf.to_container(ll.attention))  # tested with S2-Attn (Table 6)
                for set_name, tokens in streams.items():
                    r = ppl_eval.evaluate(model, tokens, target, press=False)  # S2 groups need full windows
                    metrics[f"{model_name}/{set_name}/ppl_s2@{target}"] = r.ppl
                    ppl_rows.append({"model": model_name, "eval_set": set_name, "length": target, "attention": "s2",
                                     "ppl": r.ppl, "ppl_newest": r.ppl_newest, "windows": r.n_windows,
                                     "tokens_per_s": r.tokens_per_s})
            del model
        if extension is not None:
            for model_name, load in _eval_models(cfg, paths, extension):
                model = load().to(device).eval()
                _perplexity(model, streams, ext_lengths, ppl_eval, model_name, metrics, ppl_rows)
                _passkey(model, passkey_eval, beyond, model_name, target, metrics, passkey_rows)
                del model
        metrics["eval/pi_extension_context"] = extension or target
        for row in ppl_rows:
            run.log({f"eval/{row['model']}/{row['eval_set']}/{row['attention']}/ppl": row["ppl"],
                     "eval/length": row["length"]})
        run.summary.update(metrics)
        record_run(run, paths.metrics / "runs" / "evaluate.json")
    except BaseException:
        run.finish(exit_code=1)  # any failure marks the W&B run failed
        raise
    else:
        run.finish()
    write_metrics(paths.metrics / "eval.json", metrics)
    write_csv(paths.plots / "ppl_vs_length.csv", ppl_rows)
    write_csv(paths.plots / "passkey.csv", passkey_rows)
    return metrics
