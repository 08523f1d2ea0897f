"""The SimCSE stages: prepare data → train (unsup / sup) → evaluate on the 7 STS tasks.

Each named run under ``simcse.runs`` is a small diff over ``simcse.train`` (e.g. ``mode: sup``,
``lr: 5e-5``); DVC trains and evaluates every run (``foreach``), a Hydra job trains the one named by
``simcse.run``. Model selection follows the paper: STS-B dev Spearman every
``eval_every_n_steps`` steps, the best checkpoint kept (SimCSE §3, Appendix A).
"""

from __future__ import annotations

import csv
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from repro.cli import StageContext
from repro.config import ConfigError, to_dataclass
from repro.stages import SimCSEEvalConfig, reuse_or_cache, write_stamp  # noqa: F401 (schema of simcse.eval)
from repro.tracking import init_run, make_run_name, record_run, write_csv, write_metrics

log = logging.getLogger(__name__)
PAPER = "simcse"


def run_train_config(cfg: DictConfig, run: str):
    """``simcse.train`` with the named run's overrides merged in (errors name the key)."""
    from repro.lit.simcse import SimCSETrainConfig

    runs = cfg.simcse.runs
    if run not in runs:
        raise ConfigError(f"unknown SimCSE run '{run}'; simcse.runs has {sorted(runs)}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(SimCSETrainConfig), cfg.simcse.train, runs[run])
    except Exception as exc:  # omegaconf validation error: name the run's key
        raise ConfigError(f"invalid simcse.runs.{run}: {exc}") from exc
    return OmegaConf.to_object(merged)


@dataclass(frozen=True)
class Paths:
    data: Path
    data_fp: str
    model: Path
    ckpt: Path
    metrics: Path
    plots: Path

    @classmethod
    def of(cls, cfg: DictConfig, ctx: StageContext, run: str = "") -> "Paths":
        from repro.data.simcse_data import build_simcse_data_config, input_fingerprint

        data_fp = input_fingerprint(build_simcse_data_config(OmegaConf.to_container(cfg.simcse.data)))[:12]
        data = Path(cfg.run.data_dir) / "simcse"
        if ctx.sweep:
            data = reuse_or_cache(data, ctx.cache_root / f"simcse-data-{data_fp}", data_fp)
        out = ctx.out_root
        return cls(
            data=data,
            data_fp=data_fp,
            model=out / cfg.run.model_dir / "simcse" / run,
            ckpt=out / cfg.run.model_dir / "simcse-checkpoints" / run,
            metrics=out / cfg.run.metrics_dir / "simcse",
            plots=out / cfg.run.plots_dir / "simcse",
        )


def prepare(cfg: DictConfig, ctx: StageContext) -> dict[str, Any]:
    """Write training sentences / NLI triplets, the STS sets and (tiny) a WordPiece tokenizer."""
    from repro.data.simcse_data import prepare_simcse_data

    paths = Paths.of(cfg, ctx)
    manifest = prepare_simcse_data(OmegaConf.to_container(cfg.simcse.data), paths.data)
    write_stamp(paths.data, paths.data_fp)
    log.info("SimCSE data in %s: %s", paths.data, manifest.get("counts"))
    return manifest


def _encoder_config(cfg: DictConfig, paths: Paths):
    from repro.models.sentence_encoder import EncoderConfig

    enc = to_dataclass(cfg.simcse.encoder, EncoderConfig)
    if enc.source == "tiny" and not enc.tokenizer_path:
        enc.tokenizer_path = str(paths.data / "tokenizer")
    return enc


def _training_examples(paths: Paths, mode: str) -> list:
    if mode == "unsup":
        lines = (paths.data / "train_sentences.txt").read_text(encoding="utf-8").splitlines()
        return [line for line in lines if line.strip()]
    with (paths.data / "train_triplets.csv").open(newline="", encoding="utf-8") as f:
        return [(r["sent0"], r["sent1"], r["hard_neg"]) for r in csv.DictReader(f)]


def _dev_eval(paths: Paths, batch_size: int, with_align: bool):
    """STS-B dev Spearman (model selection) plus alignment/uniformity on STS-B dev pairs."""
    from repro.evaluation.align_uniform import align_uniform_stsb
    from repro.evaluation.sts import STSEvaluator

    evaluator = STSEvaluator.from_dir(paths.data / "sts", layout="tsv", tasks=["stsb"], batch_size=batch_size)
    dev = evaluator.tasks["stsb"]["dev"]

    def dev_eval(encode_fn) -> dict[str, float]:
        out = {"stsb_dev_spearman": evaluator.dev_spearman(encode_fn)}
        if with_align:
            au = align_uniform_stsb(encode_fn, list(zip(dev.s1, dev.s2)), list(dev.gold))
            out.update({"align": au["align"], "uniform": au["uniform"]})
        return out

    return dev_eval


def train(cfg: DictConfig, ctx: StageContext, run: str) -> dict[str, Any]:
    """Train one SimCSE run; keep the best STS-B-dev checkpoint; export the encoder."""
    import lightning as L
    from lightning.pytorch.loggers import WandbLogger

    from repro.lit.history import HistoryRecorder
    from repro.lit.simcse import SimCSEDataModule, SimCSEModule, build_callbacks, build_trainer_kwargs
    from repro.models.sentence_encoder import build_encoder, export_hf

    paths = Paths.of(cfg, ctx, run)
    train_cfg = run_train_config(cfg, run)
    enc_cfg = _encoder_config(cfg, paths)
    L.seed_everything(train_cfg.seed, verbose=False)
    encoder = build_encoder(enc_cfg, enc_cfg.tokenizer_path)
    examples = _training_examples(paths, train_cfg.mode)
    dev_eval = _dev_eval(paths, cfg.simcse.eval.batch_size, cfg.simcse.eval.align_uniform)
    module = SimCSEModule(encoder, train_cfg, dev_eval)
    datamodule = SimCSEDataModule(examples, encoder.tokenizer, enc_cfg.max_length, train_cfg)
    tags = {"run": run, "encoder": enc_cfg.source if enc_cfg.source == "tiny" else enc_cfg.name_or_path or enc_cfg.package,
            "pooler": enc_cfg.pooler}
    if cfg.ablations.variant:
        tags["variant"] = f"{cfg.ablations.name}/{cfg.ablations.variant}"
    tags.update(ctx.job_tags)  # a sweep job's swept values: each job its own run name
    wandb_run = init_run(cfg, PAPER, "train", make_run_name(PAPER, "train", cfg.run.profile, tags), ctx.group)
    recorder = HistoryRecorder(("train/loss", "train/lr", "eval/stsb_dev_spearman", "eval/align", "eval/uniform"))
    start = time.perf_counter()
    try:
        callbacks = build_callbacks(paths.ckpt)
        trainer = L.Trainer(**build_trainer_kwargs(train_cfg), callbacks=[*callbacks, recorder],
                            logger=WandbLogger(experiment=wandb_run), accelerator=cfg.run.accelerator, devices=cfg.run.devices,
                            enable_progress_bar=False, enable_model_summary=False)
        resume = paths.ckpt / "last.ckpt"
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume.is_file() else None)
        best = callbacks[0]
        if best.best_model_path:  # the paper's model selection: the best STS-B dev checkpoint
            state = torch.load(best.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
            module.load_state_dict(state)
        best_score = float(best.best_model_score) if best.best_model_score is not None else float("nan")
        sps = trainer.callback_metrics.get("train/sentences_per_s")
        metrics = {
            "train/best_stsb_dev": best_score,
            "train/steps": int(trainer.global_step),
            "train/sentences_per_s": float(sps) if sps is not None else float("nan"),
            "train/peak_mem_mb": float(trainer.callback_metrics.get("train/peak_mem_mb", float("nan"))),
            "train/wall_s": round(time.perf_counter() - start, 2),
        }
        wandb_run.summary.update(metrics)
        record_run(wandb_run, paths.metrics / "runs" / f"train_{run}.json")
    finally:
        wandb_run.finish()
    paths.model.mkdir(parents=True, exist_ok=True)
    torch.save(encoder.state_dict(), paths.model / "encoder.pt")
    export_hf(encoder, paths.model / "hf")
    # Checkpoints exist to survive a failure; once the best encoder is saved they go, so that a
    # rerun (e.g. after a code change) trains afresh instead of resuming a finished run.
    shutil.rmtree(paths.ckpt, ignore_errors=True)
    write_metrics(paths.metrics / f"train_{run}.json", metrics)
    if recorder.rows:
        keys = ["step", "loss", "lr", "stsb_dev_spearman", "align", "uniform"]
        write_csv(paths.plots / f"train_{run}.csv", [{k: r.get(k, "") for k in keys} for r in recorder.rows])
    return metrics


def load_trained_encoder(cfg: DictConfig, ctx: StageContext, run: str):
    """Rebuild the encoder of a finished run (the best dev checkpoint's weights)."""
    from repro.models.sentence_encoder import build_encoder

    paths = Paths.of(cfg, ctx, run)
    enc_cfg = _encoder_config(cfg, paths)
    encoder = build_encoder(enc_cfg, enc_cfg.tokenizer_path)
    weights = paths.model / "encoder.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"no trained encoder at {weights}; run the simcse_train@{run} stage first")
    encoder.load_state_dict(torch.load(weights, map_location="cpu"))
    return encoder.eval()


def evaluate(cfg: DictConfig, ctx: StageContext, run: str) -> dict[str, Any]:
    """STS12–16 ('all', 'mean', 'wmean'), STS-B and SICK-R test Spearman ×100, plus alignment/uniformity."""
    import json

    from repro.evaluation.align_uniform import align_uniform_stsb
    from repro.evaluation.sts import STSEvaluator

    paths = Paths.of(cfg, ctx, run)
    train_cfg = run_train_config(cfg, run)
    encoder = load_trained_encoder(cfg, ctx, run)
    manifest = json.loads((paths.data / "manifest.json").read_text())
    evaluator = STSEvaluator.from_dir(paths.data / "sts", layout="tsv", batch_size=cfg.simcse.eval.batch_size,
                                      note=manifest.get("note", ""))
    start = time.perf_counter()
    with torch.inference_mode():
        encode = lambda s: encoder.encode(s, batch_size=cfg.simcse.eval.batch_size)  # noqa: E731
        result = evaluator.evaluate(encode)
        metrics = {f"sts/{k}": v for k, v in result.metrics.items()}
        if cfg.simcse.eval.align_uniform:
            test = evaluator.tasks["stsb"]["test"]
            au = align_uniform_stsb(encode, list(zip(test.s1, test.s2)), list(test.gold))
            metrics.update({"stsb_test/align": au["align"], "stsb_test/uniform": au["uniform"]})
    metrics["eval/seconds"] = round(time.perf_counter() - start, 2)
    metrics["eval/unique_sentences"] = result.n_sentences
    tags = {"run": run, "mode": train_cfg.mode}
    if cfg.ablations.variant:
        tags["variant"] = f"{cfg.ablations.name}/{cfg.ablations.variant}"
    tags.update(ctx.job_tags)
    wandb_run = init_run(cfg, PAPER, "evaluate", make_run_name(PAPER, "evaluate", cfg.run.profile, tags), ctx.group)
    try:
        wandb_run.summary.update({**metrics, "note": result.note})
        record_run(wandb_run, paths.metrics / "runs" / f"evaluate_{run}.json")
    finally:
        wandb_run.finish()
    write_metrics(paths.metrics / f"eval_{run}.json", metrics)
    return metrics
