"""Time forward+backward of causal attention patterns (LongLoRA §3.2, S2-Attn) and print a Markdown table.

Compared: full causal SDPA, grouped attention without shift, the naive roll+reshape S2-Attn of the reference
repository (written here as the baseline), this project's S2-Attn (wrap and leak-free) and its flash-attn
varlen backend when CUDA and flash-attn are present, at the Llama-2 (32/32 x 128) and SmolLM2 (9/3 x 64, GQA) head
shapes. Inputs use the token-major memory layout that transformers' attention layers produce ((B, T, H, D) viewed
as (B, H, T, D)). Beside the times it prints the bytes moved outside the attention kernels
(:mod:`tools.attention_traffic`), which carry over to GPUs where CPU times do not.

    python benchmarks/bench_attention.py                                   # CPU, both head shapes, 1k and 2k
    python benchmarks/bench_attention.py --traffic-only --lengths 1024     # traffic table only (no timing)
    python benchmarks/bench_attention.py --device cuda --dtype bf16 --lengths 8192 16384 32768
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/ of this checkout, when run as a script

from repro.models.attention.s2attn import repeat_kv, s2_attention
from repro.schemas import S2AttnConfig
from tools.attention_traffic import attention_traffic

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def full_causal(q, k, v):
    """Full causal attention, one SDPA call."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])


def grouped_no_shift(q, k, v, ratio):
    """Groups of G tokens stacked in the batch, no shift (the target S2-Attn is compared against)."""
    b, h, t, d = q.shape
    g = int(t * ratio)

    def cut(x):
        return x.transpose(1, 2).reshape(b * (t // g), g, x.shape[1], d).transpose(1, 2)  # (B*n, H, G, D)

    out = F.scaled_dot_product_attention(cut(q), cut(k), cut(v), is_causal=True,
                                         enable_gqa=q.shape[1] != k.shape[1])  # (B*n, H, G, D)
    return out.transpose(1, 2).reshape(b, t, h, d)  # (B, T, H, D)


def naive_roll_s2(q, k, v, ratio):
    """The reference recipe: repeat KV heads, roll half the heads by -G/2, reshape into groups, roll back."""
    b, h, t, d = q.shape
    g = int(t * ratio)
    k, v = repeat_kv(k, h // k.shape[1]), repeat_kv(v, h // v.shape[1])

    def roll(x, steps):
        return torch.cat([x[:, :h // 2], x[:, h // 2:].roll(steps, dims=2)], dim=1)  # (B, H, T, D)

    grouped = [roll(x, -g // 2).reshape(b, h, t // g, g, d).transpose(1, 2).reshape(b * (t // g), h, g, d)
               for x in (q, k, v)]  # (B*n, H, G, D)
    out = F.scaled_dot_product_attention(*grouped, is_causal=True)  # (B*n, H, G, D)
    out = out.reshape(b, t // g, h, g, d).transpose(1, 2).reshape(b, h, t, d)  # (B, H, T, D)
    return roll(out, g // 2)


def time_fwd_bwd(fn: Callable, q, k, v, repeats: int) -> float:
    """Median milliseconds of fn(q, k, v) forward + backward after one warm-up call."""
    sync = torch.cuda.synchronize if q.is_cuda else (lambda: None)
    times = []
    for i in range(repeats + 1):
        for x in (q, k, v):
            x.grad = None
        sync()
        start = time.perf_counter()
        fn(q, k, v).float().sum().backward()
        sync()
        if i:
            times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


HEAD_SHAPES = {"llama2": (32, 32, 128), "smollm2": (9, 3, 64)}  # query heads, key/value heads, head dim


def build_methods(args) -> dict[str, Callable]:
    """Name -> attention function on (B, H, T, D)."""
    r = args.ratio

    def s2(**fields):
        cfg = S2AttnConfig(group_size_ratio=r, **fields)
        return lambda q, k, v: s2_attention(q, k, v, cfg, layer_idx=1)

    methods = {
        "full causal (SDPA)": full_causal,
        "grouped, no shift": lambda q, k, v: grouped_no_shift(q, k, v, r),
        "naive roll S2 (baseline)": lambda q, k, v: naive_roll_s2(q, k, v, r),
        "S2 leak-free (ours)": s2(),
        "S2 roll left (ours)": s2(wrap=True),
        "S2 roll right (ours)": s2(wrap=True, direction="right"),
        "S2 leak-free, shift=layers, odd layer (ours)": s2(shift="layers"),
    }
    if args.device.startswith("cuda"):
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            print("flash-attn not installed: flash backend skipped")
        else:
            methods["S2 leak-free (ours, flash)"] = s2(backend="flash")
            methods["S2 roll (ours, flash)"] = s2(backend="flash", wrap=True)
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--shapes", nargs="+", choices=sorted(HEAD_SHAPES), default=["llama2", "smollm2"],
                        help="head shapes: llama2 = 32/32 x 128, smollm2 = 9/3 x 64 (GQA)")
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-traffic", action="store_true", help="skip the dispatch-mode traffic count")
    parser.add_argument("--traffic-only", action="store_true", help="only the traffic count, no timing")
    args = parser.parse_args()
    if args.traffic_only and args.no_traffic:
        parser.error("--traffic-only and --no-traffic exclude each other")
    dtype, methods = DTYPES[args.dtype], build_methods(args)
    rows = []
    for shape in args.shapes:
        heads, kv_heads, head_dim = HEAD_SHAPES[shape]
        for t in args.lengths:
            def make(n, t=t, head_dim=head_dim):  # token-major memory, as transformers' q/k/v projections produce
                x = torch.randn(args.batch, t, n, head_dim, device=args.device, dtype=dtype)
                return x.transpose(1, 2).requires_grad_()  # (B, H, T, D) view

            q, k, v = make(heads), make(kv_heads), make(kv_heads)
            timings = {name: float("nan") if args.traffic_only else time_fwd_bwd(fn, q, k, v, args.repeats)
                       for name, fn in methods.items()}
            full = timings["full causal (SDPA)"]
            for name, ms in timings.items():
                moved = float("nan") if args.no_traffic else attention_traffic(methods[name], q, k, v)[0]
                rows.append((shape, t, name, ms, ms / full, moved))
    timed = "" if args.traffic_only else f"median of {args.repeats}; "
    print(f"\nfwd+bwd, device={args.device}, dtype={args.dtype}, batch={args.batch}, group ratio {args.ratio}, "
          f"{timed}traffic = bytes read + written outside attention kernels, forward + backward, "
          f"in S = one query-sized tensor\n")
    if args.traffic_only:
        print("| heads | tokens | method | traffic (S) |\n| --- | ---: | --- | ---: |")
    else:
        print("| heads | tokens | method | ms | vs full | traffic (S) |\n| --- | ---: | --- | ---: | ---: | ---: |")
    for shape, t, name, ms, ratio, moved in rows:
        h, hk, d = HEAD_SHAPES[shape]
        timing = "" if args.traffic_only else f" {ms:.1f} | {ratio:.2f} |"
        print(f"| {h}/{hk} x {d} | {t} | {name} |{timing} {moved:.2f} |")


if __name__ == "__main__":
    main()
