"""LongLoRA training and evaluation throughput: attention pattern × training mode.

Measures, for full attention and S2-Attn crossed with LoRA, LoRA+ and full fine-tuning, the training
tokens/s (forward + backward + AdamW, steady state) and peak memory of one training step, and the
evaluation tokens/s of the sliding-window perplexity evaluator (full attention). Each configuration
runs in a fresh process so its peak memory is its own. Random weights: speed does not depend on them.

    python benchmarks/bench_longlora.py                              # CPU: the tiny shape at 512 tokens
    python benchmarks/bench_longlora.py --shape llama2-7b --device cuda --dtype bf16 \
        --seq 8192 16384 32768 --checkpointing full --loss-chunk 4096  # one GPU: 7B, full vs S2 x LoRA/LoRA+/full FT

Attention settings: ``full`` (SDPA causal), ``short`` (grouped, no shift: the floor S2-Attn is compared with),
``s2`` (S2-Attn, leak-free, ``--backend sdpa|flash``). The LM loss is chunked with ``--loss-chunk`` and
activation checkpointing follows ``--checkpointing`` (``repro.models.activation_checkpointing`` policies).

Prints a Markdown table last.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

SHAPES = {  # hidden, layers, heads, kv heads, intermediate, vocab, original context
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=512, max_position_embeddings=128),
    "smollm2": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    intermediate_size=1536, vocab_size=49152, max_position_embeddings=8192),
    "llama2-7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                      intermediate_size=11008, vocab_size=32000, max_position_embeddings=4096),
}


ATTENTION = {"full": {"pattern": "full"}, "short": {"pattern": "s2", "shift": "none"}, "s2": {"pattern": "s2"}}


def _measure(args: argparse.Namespace, seq: int, attention: str, mode: str, queue) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from repro.evaluation.perplexity import PerplexityEvaluator
    from repro.models.activation_checkpointing import apply_checkpointing
    from repro.models.attention.registry import apply_attention, use_full_attention
    from repro.models.chunked_loss import causal_lm_loss
    from repro.models.longlora import apply_adapter, apply_position_interpolation
    from repro.schemas import AdapterConfig

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = dict(SHAPES[args.shape])
    if args.layers:
        shape["num_hidden_layers"] = args.layers
    config = LlamaConfig(**shape)
    apply_position_interpolation(config, seq, shape["max_position_embeddings"])
    config._attn_implementation = "sdpa"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    device = torch.device(args.device)
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype)
    model = apply_adapter(model, AdapterConfig(mode=mode))
    settings = dict(ATTENTION[attention])
    if attention != "full":
        settings["backend"] = args.backend
    apply_attention(model, settings)
    apply_checkpointing(model, args.checkpointing)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    ids = torch.randint(0, shape["vocab_size"], (args.batch, seq), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.warmup + args.steps):
        sync()
        start = time.perf_counter()
        loss = causal_lm_loss(model, ids, ids, args.loss_chunk)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - start)
    step = sorted(times[args.warmup:])[len(times[args.warmup:]) // 2]
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    eval_tps = float("nan")
    if attention == "full" and mode == "lora_plus":  # evaluation does not depend on the training setting
        use_full_attention(model)
        stream = torch.randint(0, shape["vocab_size"], (seq * 3,))
        result = PerplexityEvaluator({"stride": seq // 2, "batch_size": 1,
                                      "precision": "bf16-mixed" if args.dtype == "bf16" else "32-true"}).evaluate(
            model, stream, seq)
        eval_tps = result.tokens_per_s
    queue.put({"seq": seq, "attention": attention, "mode": mode, "step_s": step, "tokens_per_s": args.batch * seq / step,
               "peak_mb": peak, "trainable": sum(p.numel() for p in params), "eval_tokens_per_s": eval_tps})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--layers", type=int, default=0, help="override the number of layers (0: the shape's)")
    parser.add_argument("--seq", type=int, nargs="+", default=[512])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--modes", nargs="+", default=["lora", "lora_plus", "full"])
    parser.add_argument("--attention", nargs="+", choices=sorted(ATTENTION), default=["full", "short", "s2"])
    parser.add_argument("--backend", choices=["sdpa", "flash"], default="sdpa", help="S2-Attn backend")
    parser.add_argument("--checkpointing", choices=["none", "full", "alternate"], default="none")
    parser.add_argument("--loss-chunk", type=int, default=0, help="LM-loss chunk (0: full logits)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for seq in args.seq:
        for mode in args.modes:
            for attention in args.attention:
                queue = ctx.Queue()
                proc = ctx.Process(target=_measure, args=(args, seq, attention, mode, queue))
                proc.start()
                proc.join()
                if proc.exitcode != 0:  # e.g. out of memory
                    rows.append({"seq": seq, "attention": attention, "mode": mode, "error": f"exit {proc.exitcode}"})
                    continue
                rows.append(queue.get())
                print(rows[-1], flush=True)
    mem = "peak GPU MiB" if args.device.startswith("cuda") else "peak RSS MiB"
    print(f"\n{args.shape} shape{f' ({args.layers} layers)' if args.layers else ''}, batch {args.batch}, {args.dtype}, "
          f"{args.device}, checkpointing {args.checkpointing}, loss chunk {args.loss_chunk or 'off'}, "
          f"S2 backend {args.backend}\n")
    print(f"| tokens | attention | mode | trainable params | step (s) | train tokens/s | vs short | {mem} |"
          f" eval tokens/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    short = {(r["seq"], r["mode"]): r["step_s"] for r in rows if r["attention"] == "short" and "error" not in r}
    for r in rows:
        if "error" in r:
            print(f"| {r['seq']} | {r['attention']} | {r['mode']} | {r['error']} | | | | | |")
            continue
        ev = "" if r["eval_tokens_per_s"] != r["eval_tokens_per_s"] else f"{r['eval_tokens_per_s']:.0f}"
        rel = short.get((r["seq"], r["mode"]))
        rel = f"{r['step_s'] / rel:.2f}" if rel else ""
        print(f"| {r['seq']} | {r['attention']} | {r['mode']} | {r['trainable']:,} | {r['step_s']:.3f} |"
              f" {r['tokens_per_s']:.0f} | {rel} | {r['peak_mb']:.0f} | {ev} |")


if __name__ == "__main__":
    main()
