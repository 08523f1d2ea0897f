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

from omegaconf import DictConfig, OmegaConf

from repro.cli import StageContext
from repro.config import ConfigError
from repro.resume import code_version, prune_stale_checkpoints, resumable_run_id
from repro.scale import split_global_batch
from repro.simcse_runs import run_encoder_config, run_train_config
from repro.stages import STAMP, reuse_or_cache, write_stamp
from repro.tracking import init_run, make_run_name, record_run, write_csv, write_metrics

log = logging.getLogger(__name__)
PAPER = "simcse"


def checkpoint_key(cfg: DictConfig, run: str, data_fp: str) -> str:
    """Folder key of a run's training checkpoints: its train + encoder config, data, seed, world and code.

    A rerun of the same config resumes; a changed lr (or code) starts afresh in a new folder.
    """
    import hashlib
    import json
    from dataclasses import asdict

    world = int(cfg.run.devices) * int(cfg.run.num_nodes)
    parts = {"train": asdict(run_train_config(cfg, run)), "encoder": asdict(run_encoder_config(cfg, run)),
             "data": data_fp, "seed": cfg.get("seed"), "world": world, "code": code_version()}  # one code key
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return f"{run}-{hashlib.sha256(blob).hexdigest()[:12]}"


TINY_ARCH = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings")


def pretrain_fingerprint(cfg: DictConfig, data_fp: str) -> str:
    """Identity of the MLM-pretrained tiny encoder: data, architecture and ``simcse.pretrain`` (its own seed).

    Not the SimCSE run's seed, dropout, pooler or training settings, so every run, seed and ablation variant
    of one architecture starts from the same pretrained weights (as every SimCSE run starts from one BERT).
    """
    from repro.fingerprint import fingerprint

    enc = cfg.simcse.encoder
    return fingerprint({"data": data_fp, "source": enc.source, "arch": {k: enc.get(k) for k in TINY_ARCH},
                        "pretrain": OmegaConf.to_container(cfg.simcse.pretrain)})


def mlm_pretrained(cfg: DictConfig) -> bool:
    """Whether the SimCSE runs start from the ``simcse_pretrain`` stage's MLM weights (a tiny encoder)."""
    return cfg.simcse.encoder.source == "tiny" and int(cfg.simcse.pretrain.steps) > 0


@dataclass(frozen=True)
class Paths:
    data: Path
    data_fp: str
    pretrained: Path
    pretrained_fp: str
    model: Path
    ckpt: Path
    metrics: Path
    plots: Path

    @classmethod
    def of(cls, cfg: DictConfig, ctx: StageContext, run: str = "") -> Paths:
        from repro.data.simcse_data import build_simcse_data_config, input_fingerprint

        data_fp = input_fingerprint(build_simcse_data_config(OmegaConf.to_container(cfg.simcse.data)))[:12]
        data = Path(cfg.run.data_dir) / "simcse"
        pretrained_fp = pretrain_fingerprint(cfg, data_fp)
        pretrained = Path(cfg.run.model_dir) / "simcse" / "pretrained"
        if ctx.sweep:
            data = reuse_or_cache(data, ctx.cache_root / f"simcse-data-{data_fp}", data_fp)
            pretrained = reuse_or_cache(pretrained, ctx.cache_root / f"simcse-pretrained-{pretrained_fp[:12]}",
                                        pretrained_fp)
        out = ctx.out_root
        return cls(
            data=data,
            data_fp=data_fp,
            pretrained=pretrained,
            pretrained_fp=pretrained_fp,
            model=out / cfg.run.model_dir / "simcse" / run,
            ckpt=out / cfg.run.model_dir / "simcse-checkpoints" / (checkpoint_key(cfg, run, data_fp) if run else ""),
            metrics=out / cfg.run.metrics_dir / "simcse",
            plots=out / cfg.run.plots_dir / "simcse",
        )


def prepare(cfg: DictConfig, ctx: StageContext) -> dict[str, Any]:
    """Write training sentences / NLI triplets, the STS sets and (tiny) a WordPiece tokenizer."""
    from repro.data.simcse_data import prepare_simcse_data

    paths = Paths.of(cfg, ctx)
    manifest = prepare_simcse_data(OmegaConf.to_container(cfg.simcse.data), paths.data)
    if str(cfg.simcse.transfer.data_dir) == "synthetic":  # tiny: SentEval-layout stand-ins, no download
        from repro.data.transfer_synthetic import write_synthetic_transfer

        write_synthetic_transfer(paths.data / "transfer", seed=int(cfg.simcse.data.seed))
    write_stamp(paths.data, paths.data_fp)
    log.info("SimCSE data in %s: %s", paths.data, manifest.get("counts"))
    return manifest


def _encoder_config(cfg: DictConfig, paths: Paths, run: str | None):
    """The run's encoder config (``run=None``: ``simcse.encoder`` itself) with the stage-made paths filled in."""
    from repro.config import to_dataclass
    from repro.schemas import EncoderConfig

    enc = run_encoder_config(cfg, run) if run is not None else to_dataclass(cfg.simcse.encoder, EncoderConfig)
    if enc.source == "tiny" and not enc.tokenizer_path:
        enc.tokenizer_path = str(paths.data / "tokenizer")
    if mlm_pretrained(cfg) and not enc.init_from:
        enc.init_from = str(paths.pretrained)
    return enc


def _mlm_train(cfg: DictConfig, ctx: StageContext, paths: Paths) -> dict[str, Any]:
    """MLM-pretrain the tiny BERT into ``paths.pretrained`` (resumable); returns the training metrics."""
    from dataclasses import asdict, replace

    import torch
    from lightning.pytorch.loggers import WandbLogger
    from transformers import AutoTokenizer, BertForMaskedLM

    from repro.config import to_dataclass
    from repro.data.mlm_data import MaskedBlocks, pack_sentences
    from repro.lit.causal_lm import MaskedLMModule, PackedBlocksDataModule, build_trainer, fit_resumable
    from repro.lit.history import HistoryRecorder
    from repro.models.sentence_encoder import build_encoder
    from repro.schemas import SimCSEPretrainConfig, TrainConfig

    pcfg = to_dataclass(cfg.simcse.pretrain, SimCSEPretrainConfig)
    enc = replace(_encoder_config(cfg, paths, None), init_from=None, dropout=pcfg.dropout)
    torch.manual_seed(pcfg.seed)
    backbone = build_encoder(enc, enc.tokenizer_path).backbone  # the BertModel every SimCSE run starts from
    tokenizer = AutoTokenizer.from_pretrained(enc.tokenizer_path)
    model = BertForMaskedLM(backbone.config)
    model.bert.load_state_dict(backbone.state_dict())
    blocks = pack_sentences(_training_examples(paths, "unsup"), tokenizer, pcfg.block_length)
    dataset = MaskedBlocks(blocks, tokenizer, length=pcfg.steps * pcfg.batch_size, seed=pcfg.seed,
                           mask_prob=pcfg.mask_prob)
    train_cfg = TrainConfig(context_length=pcfg.block_length, max_steps=pcfg.steps, batch_size=pcfg.batch_size,
                            grad_accum=1, lr=pcfg.lr, warmup_steps=pcfg.warmup_steps, seed=pcfg.seed,
                            log_every_n_steps=10, ckpt_every_n_steps=pcfg.ckpt_every_n_steps)
    ckpt = Path(cfg.run.model_dir if not ctx.sweep else ctx.cache_root) / "simcse-checkpoints" \
        / f"pretrain-{paths.pretrained_fp[:12]}-{code_version()[:12]}"
    recorder = HistoryRecorder(("train/loss", "train/lr"))
    run = init_run(cfg, PAPER, "pretrain", make_run_name(PAPER, "pretrain", cfg.run.profile, {"obj": "mlm"}), ctx.group)
    start = time.perf_counter()
    try:
        module = MaskedLMModule(model, train_cfg, {"pretrain": asdict(pcfg)})
        trainer = build_trainer(train_cfg, ckpt, loggers=[WandbLogger(experiment=run)], callbacks=[recorder],
                                accelerator=cfg.run.accelerator)
        resumed = fit_resumable(trainer, module, PackedBlocksDataModule(train_cfg, dataset=dataset), ckpt)
    except BaseException:
        run.finish(exit_code=1)
        raise
    losses = [r["loss"] for r in recorder.rows if r.get("loss") not in (None, "")]
    metrics = {"pretrain/steps": int(trainer.global_step), "pretrain/blocks": int(len(blocks)),
               "pretrain/block_length": pcfg.block_length,
               "pretrain/final_mlm_loss": float(losses[-1]) if losses else float("nan"),
               "pretrain/first_mlm_loss": float(losses[0]) if losses else float("nan"),
               "pretrain/wall_s": round(time.perf_counter() - start, 2), "pretrain/resumed": resumed is not None}
    run.summary.update(metrics)
    run.finish()
    paths.pretrained.mkdir(parents=True, exist_ok=True)
    model.bert.save_pretrained(paths.pretrained)
    tokenizer.save_pretrained(paths.pretrained)
    write_stamp(paths.pretrained, paths.pretrained_fp)
    shutil.rmtree(ckpt, ignore_errors=True)  # finished: a rerun pretrains afresh
    if recorder.rows:
        write_csv(paths.plots / "pretrain_mlm.csv", [{k: r.get(k, "") for k in ("step", "loss", "lr")}
                                                      for r in recorder.rows])
    return metrics


def ensure_pretrained(cfg: DictConfig, ctx: StageContext, paths: Paths, train: bool = True) -> dict[str, Any]:
    """Make sure ``paths.pretrained`` holds this config's MLM-pretrained encoder; pretrain it when missing.

    ``train=False`` (a SimCSE stage under DVC, whose ``simcse_pretrain`` stage owns the folder) raises instead.
    """
    if not mlm_pretrained(cfg):
        return {"pretrain/steps": 0}
    from repro.stages import is_stamped

    if is_stamped(paths.pretrained) and (paths.pretrained / STAMP).read_text().strip() == paths.pretrained_fp:
        return {"pretrain/reused": True}
    if not train:
        raise FileNotFoundError(f"{paths.pretrained} holds no MLM-pretrained encoder for this config "
                                "(simcse.pretrain, the encoder's architecture, the data); run the simcse_pretrain stage")
    return _mlm_train(cfg, ctx, paths)


def pretrain(cfg: DictConfig, ctx: StageContext) -> dict[str, Any]:
    """The ``simcse_pretrain`` stage: MLM-pretrain a tiny encoder, then score the encoder before SimCSE.

    A package / hub checkpoint is not trained (it is pretrained already); ``models/simcse/pretrained/``
    then holds only its stamp. The encoder SimCSE starts from is scored on the STS sets with each pooler of
    ``simcse.pretrain.eval_poolers`` (SimCSE Table 5's "BERT (first-last avg.)" rows), keys
    ``before/<pooler>/sts/...`` in ``metrics/simcse/pretrained.json``.
    """
    import json
    from dataclasses import replace

    import torch

    from repro.evaluation.sts import STSEvaluator
    from repro.models.sentence_encoder import build_encoder

    paths = Paths.of(cfg, ctx)
    if paths.pretrained.exists() and not (paths.pretrained / STAMP).is_file():
        shutil.rmtree(paths.pretrained)  # a folder left by a killed run
    metrics = ensure_pretrained(cfg, ctx, paths)  # stamps the folder when it pretrains
    if not mlm_pretrained(cfg):  # a checkpoint needs no pretraining: the folder holds only its stamp
        paths.pretrained.mkdir(parents=True, exist_ok=True)
        write_stamp(paths.pretrained, paths.pretrained_fp)
    manifest = json.loads((paths.data / "manifest.json").read_text())
    evaluator = STSEvaluator.from_dir(paths.data / "sts", layout="tsv", batch_size=cfg.simcse.eval.batch_size,
                                      note=manifest.get("note", ""))
    base = _encoder_config(cfg, paths, None)
    start = time.perf_counter()
    for pooler in cfg.simcse.pretrain.eval_poolers:
        torch.manual_seed(0)  # a CLS pooler's MLP head is random; cls_before_pooler and averages have none
        encoder = build_encoder(replace(base, pooler=str(pooler), mlp_only_train=True), base.tokenizer_path).eval()
        with torch.inference_mode():
            result = evaluator.evaluate(lambda s, e=encoder: e.encode(s, batch_size=cfg.simcse.eval.batch_size))
        metrics.update({f"before/{pooler}/sts/{k}": v for k, v in result.metrics.items()})
    metrics["before/seconds"] = round(time.perf_counter() - start, 2)
    metrics["before/init"] = "mlm" if mlm_pretrained(cfg) else ("random" if base.source == "tiny" else "checkpoint")
    wandb_run = init_run(cfg, PAPER, "before", make_run_name(PAPER, "before", cfg.run.profile, {}), ctx.group)
    try:
        wandb_run.summary.update(metrics)
        record_run(wandb_run, paths.metrics / "runs" / "pretrained.json")
    finally:
        wandb_run.finish()
    write_metrics(paths.metrics / "pretrained.json", metrics)
    return metrics


def _training_examples(paths: Paths, mode: str) -> list:
    if mode == "unsup":
        lines = (paths.data / "train_sentences.txt").read_text(encoding="utf-8").splitlines()
        return [line for line in lines if line.strip()]
    with (paths.data / "train_triplets.csv").open(newline="", encoding="utf-8") as f:
        return [(r["sent0"], r["sent1"], r["hard_neg"]) for r in csv.DictReader(f)]


def _dev_eval(paths: Paths, batch_size: int, with_align: bool, with_sick: bool = False):
    """STS-B dev Spearman (model selection) plus alignment/uniformity on STS-B dev pairs."""
    from repro.evaluation.align_uniform import align_uniform_stsb
    from repro.evaluation.sts import STSEvaluator

    evaluator = STSEvaluator.from_dir(paths.data / "sts", layout="tsv", tasks=["stsb"], batch_size=batch_size)
    dev = evaluator.tasks["stsb"]["dev"]
    sick = None
    if with_sick:
        try:
            sick = STSEvaluator.from_dir(paths.data / "sts", layout="tsv", tasks=["sickr"], batch_size=batch_size,
                                         with_sick_dev=True)
        except FileNotFoundError as exc:
            raise ConfigError("simcse.train.eval_avg_sts=true needs SICK-R dev (trial) pairs; the prepared data has "
                              f"none (the hub copy of SICK-R is test only: use simcse.data.source=local): {exc}") from exc

    def dev_eval(encode_fn) -> dict[str, float]:
        out = {"stsb_dev_spearman": evaluator.dev_spearman(encode_fn)}
        if sick is not None:
            out["sickr_dev_spearman"] = sick.evaluate(encode_fn).metrics["sickr/trial"]
        if with_align:
            au = align_uniform_stsb(encode_fn, list(zip(dev.s1, dev.s2, strict=False)), list(dev.gold))
            out.update({"align": au["align"], "uniform": au["uniform"]})
        return out

    return dev_eval


def train(cfg: DictConfig, ctx: StageContext, run: str) -> dict[str, Any]:
    """Train one SimCSE run; keep the best STS-B-dev checkpoint; export the encoder.

    Scale-out (``run.devices × run.num_nodes`` ranks, ``run.strategy``): ``simcse.train.batch_size``
    is global and split over the ranks (no accumulation); the W&B run, exports, metric files and
    checkpoint cleanup happen on global rank zero only. Under Lightning's ``ddp`` launcher the other
    ranks re-run the stage script, build the same module, train, and return after ``fit``.
    """
    import lightning as L
    import torch
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities import rank_zero_only

    from repro.lit.causal_lm import DivergenceError, progress_bar_wanted
    from repro.lit.history import HistoryRecorder
    from repro.lit.simcse import SimCSEDataModule, SimCSEModule, build_callbacks, build_trainer_kwargs
    from repro.models.sentence_encoder import build_encoder
    from repro.models.simcse_export import export_hf, export_sentence_transformers
    from repro.resume import find_resume_checkpoint

    paths = Paths.of(cfg, ctx, run)
    train_cfg = run_train_config(cfg, run)
    enc_cfg = _encoder_config(cfg, paths, run)
    world = int(cfg.run.devices) * int(cfg.run.num_nodes)
    split_global_batch(train_cfg.batch_size, world, key=f"simcse.train.batch_size (run {run})")  # fail early
    L.seed_everything(train_cfg.seed, verbose=False)
    ensure_pretrained(cfg, ctx, paths, train=ctx.sweep)  # a sweep job pretrains into its cache when needed
    encoder = build_encoder(enc_cfg, enc_cfg.tokenizer_path)
    examples = _training_examples(paths, train_cfg.mode)
    dev_eval = _dev_eval(paths, cfg.simcse.eval.batch_size, cfg.simcse.eval.align_uniform, train_cfg.eval_avg_sts)
    module = SimCSEModule(encoder, train_cfg, dev_eval)
    datamodule = SimCSEDataModule(examples, encoder.tokenizer, enc_cfg.max_length, train_cfg)
    tags = {"run": run, "encoder": enc_cfg.source if enc_cfg.source == "tiny" else enc_cfg.name_or_path or enc_cfg.package,
            "pooler": enc_cfg.pooler}
    if cfg.ablations.variant:
        tags["variant"] = f"{cfg.ablations.name}/{cfg.ablations.variant}"
    tags.update(ctx.job_tags)  # a sweep job's swept values: each job its own run name
    zero = rank_zero_only.rank == 0  # set from the launcher's env before any Trainer exists
    if zero:  # the rule LongLoRA's train stage follows (README, "Checkpoint cleanup rule")
        for stale in prune_stale_checkpoints(paths.ckpt.parent, paths.ckpt, float(cfg.run.ckpt_keep_days)):
            log.info("removed abandoned checkpoint folder %s (untouched > run.ckpt_keep_days)", stale)
    wandb_run = init_run(cfg, PAPER, "train", make_run_name(PAPER, "train", cfg.run.profile, tags), ctx.group,
                         run_id=resumable_run_id(paths.ckpt)) \
        if zero else None
    recorder = HistoryRecorder(("train/loss", "train/lr"),
                               eval_keys=("eval/stsb_dev_spearman", "eval/align", "eval/uniform"))
    start = time.perf_counter()
    try:
        callbacks = build_callbacks(paths.ckpt, train_cfg)
        # the recorder first: the periodic last.ckpt of a step must hold that step's row
        trainer = L.Trainer(**build_trainer_kwargs(train_cfg), callbacks=[recorder, *callbacks],
                            logger=WandbLogger(experiment=wandb_run) if wandb_run is not None else False,
                            accelerator=cfg.run.accelerator, devices=cfg.run.devices, num_nodes=cfg.run.num_nodes,
                            strategy=cfg.run.strategy, enable_progress_bar=progress_bar_wanted(), enable_model_summary=False)
        resume = find_resume_checkpoint(paths.ckpt)  # the newest intact checkpoint (corrupt ones are skipped)
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
        except DivergenceError as exc:
            failed = {"status": "failed", "error": str(exc), "train/steps": int(trainer.global_step)}
            write_metrics(paths.metrics / f"train_{run}.json", failed)
            if wandb_run is not None:
                wandb_run.summary.update(failed)
                wandb_run.finish(exit_code=1)
                wandb_run = None
            raise
        if not trainer.is_global_zero:
            return {}
        best = callbacks[0]
        if best.best_model_path:  # the paper's model selection: the best STS-B dev checkpoint
            state = torch.load(best.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
            module.load_state_dict(state)
        best_score = float(best.best_model_score) if best.best_model_score is not None else float("nan")
        sps = trainer.callback_metrics.get("train/sentences_per_s")
        metrics = {
            "train/best_stsb_dev": best_score,
            "train/steps": int(trainer.global_step),
            "train/world_size": world,
            "train/sentences_per_s": float(sps) if sps is not None else float("nan"),
            "train/peak_mem_mb": float(trainer.callback_metrics.get("train/peak_mem_mb", float("nan"))),
            "train/wall_s": round(time.perf_counter() - start, 2),
            "train/resumed": resume is not None,
            "status": "ok",
        }
        wandb_run.summary.update(metrics)
        record_run(wandb_run, paths.metrics / "runs" / f"train_{run}.json")
    except BaseException:
        if wandb_run is not None:  # any failure marks the W&B run failed
            wandb_run.finish(exit_code=1)
            wandb_run = None
        raise
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    paths.model.mkdir(parents=True, exist_ok=True)
    encoder.cpu()
    torch.save(encoder.state_dict(), paths.model / "encoder.pt")
    export_hf(encoder, paths.model / "hf")  # MLP head as BERT's pooler (simcse_to_huggingface.py)
    try:
        export_sentence_transformers(encoder, out_dir=paths.model / "sentence-transformers")
    except (ImportError, ValueError) as exc:  # optional extra / a pooler without an ST equivalent
        log.warning("no sentence-transformers export: %s", exc)
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
    from dataclasses import replace

    import torch

    from repro.models.sentence_encoder import build_encoder

    paths = Paths.of(cfg, ctx, run)
    enc_cfg = replace(_encoder_config(cfg, paths, run), init_from=None)  # every weight comes from encoder.pt
    encoder = build_encoder(enc_cfg, enc_cfg.tokenizer_path)
    weights = paths.model / "encoder.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"no trained encoder at {weights}; run the simcse_train@{run} stage first")
    encoder.load_state_dict(torch.load(weights, map_location="cpu"))
    return encoder.eval()


def evaluate(cfg: DictConfig, ctx: StageContext, run: str, tasks: list[str] | None = None) -> dict[str, Any]:
    """STS12–16 ('all', 'mean', 'wmean'), STS-B and SICK-R test Spearman ×100, plus alignment/uniformity.

    ``tasks`` restricts the test sets (an ablation variant: ``simcse.eval.ablation_tasks``); STS-B is always
    loaded, for alignment and uniformity.
    """
    import json

    import torch

    from repro.evaluation.align_uniform import align_uniform_stsb
    from repro.evaluation.sts import STSEvaluator

    paths = Paths.of(cfg, ctx, run)
    train_cfg = run_train_config(cfg, run)
    encoder = load_trained_encoder(cfg, ctx, run)
    manifest = json.loads((paths.data / "manifest.json").read_text())
    chosen = {"tasks": sorted({*tasks, "stsb"})} if tasks is not None else {}
    evaluator = STSEvaluator.from_dir(paths.data / "sts", layout="tsv", batch_size=cfg.simcse.eval.batch_size,
                                      note=manifest.get("note", ""), **chosen)
    start = time.perf_counter()
    with torch.inference_mode():
        encode = lambda s: encoder.encode(s, batch_size=cfg.simcse.eval.batch_size)  # noqa: E731
        result = evaluator.evaluate(encode)
        metrics = {f"sts/{k}": v for k, v in result.metrics.items()}
        if cfg.simcse.eval.align_uniform:
            test = evaluator.tasks["stsb"]["test"]
            au = align_uniform_stsb(encode, list(zip(test.s1, test.s2, strict=False)), list(test.gold))
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


def transfer(cfg: DictConfig, ctx: StageContext, run: str) -> dict[str, Any]:
    """SentEval transfer tasks (MR, CR, SUBJ, MPQA, SST-2, TREC, MRPC) on the run's frozen embeddings.

    Logistic regression (scikit-learn) under the SentEval protocol (:mod:`repro.evaluation.transfer`);
    sentences are encoded untruncated, as for STS. Writes ``metrics/simcse/transfer_<run>.json``.
    """
    from repro.config import to_dataclass
    from repro.evaluation.transfer import evaluate_transfer
    from repro.schemas import TransferConfig

    paths = Paths.of(cfg, ctx, run)
    tcfg = to_dataclass(cfg.simcse.transfer, TransferConfig)
    root = Path(tcfg.data_dir) if tcfg.data_dir != "synthetic" else paths.data / "transfer"
    if not root.is_absolute():
        from repro.cli import REPO_ROOT

        root = (Path.cwd() / root) if (Path.cwd() / root).is_dir() else REPO_ROOT / root
    tcfg.data_dir = str(root)
    encoder = load_trained_encoder(cfg, ctx, run)
    start = time.perf_counter()
    metrics = evaluate_transfer(lambda s: encoder.encode(s, batch_size=tcfg.batch_size).numpy(), tcfg)
    metrics["transfer/seconds"] = round(time.perf_counter() - start, 2)
    metrics["transfer/max_examples"] = tcfg.max_examples if tcfg.max_examples is not None else -1
    tags = {"run": run, "mode": run_train_config(cfg, run).mode}
    wandb_run = init_run(cfg, PAPER, "transfer", make_run_name(PAPER, "transfer", cfg.run.profile, tags), ctx.group)
    try:
        wandb_run.summary.update(metrics)
        record_run(wandb_run, paths.metrics / "runs" / f"transfer_{run}.json")
    finally:
        wandb_run.finish()
    write_metrics(paths.metrics / f"transfer_{run}.json", metrics)
    return metrics


def run_seeds(cfg: DictConfig, ctx: StageContext, run: str, seeds: list[int]) -> dict[str, Any]:
    """Train + evaluate one run once per seed, in one process; metrics as mean, ``/std`` and ``/per_seed``.

    Published reproductions report 1–3 points of seed variance on STS, so an ablation ordering is
    only "held" when it holds beyond the spread (:func:`repro.seeds.ordering_held`). Each
    seed trains in ``<out>/seed<N>/`` (its own checkpoints and W&B run); the data is shared.
    """
    from dataclasses import replace

    from repro.seeds import aggregate_seeds

    if not seeds:
        raise ConfigError("ablation 'seeds' must list at least one seed")
    per_seed: list[dict[str, Any]] = []
    prepare(cfg, ctx)
    for seed in seeds:
        scfg = OmegaConf.merge(cfg, {"seed": int(seed), "simcse": {"train": {"seed": int(seed)}}})
        sctx = replace(ctx, out_root=ctx.out_root / f"seed{seed}")
        per_seed.append({**train(scfg, sctx, run),
                         **evaluate(scfg, sctx, run, tasks=list(cfg.simcse.eval.ablation_tasks))})
    return aggregate_seeds(per_seed, seeds)
