"""Real pretrained models on a 2-core CPU: the ``real_cpu`` profile's study, written to ``reports/real_cpu.md``.

    make real-cpu                              # python -m tools.real_cpu run: every step, then the page
    python -m tools.real_cpu run --only native # one step (a finished step is skipped unless --force)
    python -m tools.real_cpu report            # rewrite the page from metrics/real_cpu/

Each step writes ``metrics/real_cpu/<step>.json`` with a fingerprint of what it ran (the composed
params, the package's code version, this tool, the shipped data's manifest); a rerun skips a step
whose fingerprint is unchanged, so an interrupted study resumes at the step it stopped in (and the
training stages resume from their own checkpoints). Work folders live under ``.cache/real_cpu/``.

1. ``longlora``: SmolLM2-135M treated as a 2048-token model and extended to 4096 (PI factor 2) with
   LoRA+ and S2-Attn, by the pipeline's own stages (prepare_lm, base, train, evaluate) on the
   ``real_cpu`` profile: perplexity (eval.py's sliding windows) and passkey on the held-out book,
   within 4096 as trained and at 8192 with the PI-only extension (§4.2).
2. ``full_ft``: the same budget with full attention and full fine-tuning (the Table 2 baseline), on
   the same prepared data and base model.
3. ``native``: SmolLM2 as released (8192 native context): perplexity and passkey from 1k to 8k, and at
   16k with PI only (factor 2, no training).
4. ``simcse``: all-MiniLM-L6-v2 as released (the reference point), SmolLM2 as an LLM2Vec-style encoder
   (bidirectional attention, mean pooling) before and after unsupervised SimCSE on the shipped
   Wikipedia sentences (the pipeline's simcse stages), scored on a fixed subsample of the shipped STS
   test pairs (:data:`STS_SUBSAMPLE`); MiniLM also on every shipped pair.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from repro.fingerprint import file_sha256
from repro.fingerprint import fingerprint as content_fingerprint
from repro.paths import find_repo_root

log = logging.getLogger("real_cpu")
REPO = find_repo_root()
WORK = REPO / ".cache" / "real_cpu"
METRICS = REPO / "metrics" / "real_cpu"
PAGE = REPO / "reports" / "real_cpu.md"
STEPS = ("longlora", "full_ft", "native", "simcse")

#: The released model's own points: native up to its 8192 context, then PI-only (factor 2).
#: Passkey points are multiples of ``passkey_interval`` (its filler length is the reference's function of both).
NATIVE = {"original_context": 8192, "lengths": [1024, 2048, 4096, 8192], "passkey": [1024, 2048, 4096, 8192],
          "pi_context": 16384, "pi_lengths": [16384], "pi_passkey": [16384], "passkey_interval": 1024}
#: The STS pairs every SimCSE model is scored on: a seeded sample of each STS12-16 subset and of the
#: STS-B / SICK-R test splits (a CPU budget; MiniLM is scored on every shipped pair as well).
STS_SUBSAMPLE = {"per_subset": 100, "per_split": 500, "seed": 0}
STS_ROOT = "data/shipped/simcse/sts"
MINILM_CONF = "conf/encoder/minilm.yaml"
#: The profile's variants: (work folder, Hydra overrides over ``profile=real_cpu``).
VARIANTS = {"longlora": ("lora", ()), "full_ft": ("full_ft", ("attention=full", "adapter=full")),
            "native": ("lora", ()), "simcse": ("simcse", ())}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1), "torch": torch.__version__,
            "gpu": torch.cuda.is_available(), "python": platform.python_version()}


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1",
            "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and link.resolve() == target.resolve():
        return
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link} exists and is not the link to {target} the study expects; remove it")
    link.symlink_to(target, target_is_directory=True)


def prepare_work(step: str, extra: tuple[str, ...] = (), root: Path = WORK) -> Path:
    """The step's work folder with its composed ``params.yaml`` and the shipped data linked in."""
    name, overrides = VARIANTS[step]
    overrides = (*overrides, *extra)
    work = root / name
    _link(work / "data" / "shipped", REPO / "data" / "shipped")
    if step == "full_ft":  # the same prepared data and base model as the LongLoRA run
        _link(work / "data" / "longlora", root / "lora" / "data" / "longlora")
        _link(work / "models" / "longlora" / "base", root / "lora" / "models" / "longlora" / "base")
    subprocess.run([sys.executable, "-m", "repro.compose", "profile=real_cpu", *overrides, "-o",
                    str(work / "params.yaml")], cwd=REPO, env=_env(), check=True, capture_output=True, text=True)
    return work


def run_stage(work: Path, module: str, *args: str) -> float:
    """Run one pipeline stage as DVC runs it, in ``work``; its log goes to ``work/logs/``."""
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    out = logs / f"{module.split('.')[-1]}{'_' + '_'.join(args[1::2]) if args else ''}.log"
    start = time.perf_counter()
    log.info("%s: python -m %s %s", work.name, module, " ".join(args))
    with out.open("w") as fh:
        proc = subprocess.run([sys.executable, "-m", module, "--params", "params.yaml", *args], cwd=work,
                              env=_env(), stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(out.read_text().splitlines()[-40:])
        raise RuntimeError(f"stage {module} {' '.join(args)} failed in {work} (exit {proc.returncode}); "
                           f"log {out}:\n{tail}")
    return round(time.perf_counter() - start, 1)


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _lm_result(work: Path, seconds: dict[str, float]) -> dict[str, Any]:
    from omegaconf import OmegaConf

    ll = OmegaConf.to_container(OmegaConf.load(work / "params.yaml").longlora)
    return {"stage_s": seconds, "train": _read(work / "metrics/longlora/train.json"),
            "eval": _read(work / "metrics/longlora/eval.json"),
            "config": {k: ll[k] for k in ("train", "eval", "attention", "adapter")}}


def step_longlora(work: Path) -> dict[str, Any]:
    return _lm_result(work, {m: run_stage(work, f"pipeline.{m}") for m in ("prepare_lm", "base", "train", "evaluate")})


def step_full_ft(work: Path) -> dict[str, Any]:
    if not (work / "models/longlora/base/config.json").is_file():
        raise FileNotFoundError("full_ft reuses the longlora step's data and base model: run that step first")
    return _lm_result(work, {m: run_stage(work, f"pipeline.{m}") for m in ("train", "evaluate")})


def step_native(work: Path) -> dict[str, Any]:
    """SmolLM2 as released at its native lengths, then PI-only beyond them; the evaluate stage's evaluators."""
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from repro.config import to_dataclass
    from repro.evaluation.passkey import build_passkey_evaluator
    from repro.evaluation.perplexity import build_perplexity_evaluator
    from repro.models.longlora import load_for_context, pi_factor
    from repro.schemas import LMEvalConfig
    from repro.workflows.longlora_eval import load_eval_streams

    base = work / "models/longlora/base"
    if not (base / "config.json").is_file():
        raise FileNotFoundError("native reads the longlora step's base model and data: run that step first")
    cfg = OmegaConf.load(work / "params.yaml")
    torch.set_num_threads(int(cfg.run.num_threads))
    eval_cfg = replace(to_dataclass(cfg.longlora.eval, LMEvalConfig), passkey_interval=NATIVE["passkey_interval"])
    tokenizer = AutoTokenizer.from_pretrained(work / "data/longlora/tokenizer")
    streams = load_eval_streams(work / "data/longlora")
    ppl_eval, passkey_eval = build_perplexity_evaluator(eval_cfg), build_passkey_evaluator(tokenizer, eval_cfg)
    original = NATIVE["original_context"]
    metrics: dict[str, Any] = {}
    for name, context, lengths, points in (
        ("smollm2", original, NATIVE["lengths"], NATIVE["passkey"]),
        ("smollm2_pi_extended", NATIVE["pi_context"], NATIVE["pi_lengths"], NATIVE["pi_passkey"]),
    ):
        model = load_for_context(base, context, original_context=original, dtype=cfg.longlora.model.dtype).eval()
        metrics[f"{name}/pi_factor"] = pi_factor(context, original)
        for set_name, tokens in streams.items():
            for length in lengths:
                r = ppl_eval.evaluate(model, tokens, length)
                metrics[f"{name}/{set_name}/ppl@{length}"] = r.ppl
                metrics[f"{name}/{set_name}/windows@{length}"] = r.n_windows
        for row in passkey_eval.evaluate(model, points).rows():
            metrics[f"{name}/passkey@{row['target']}"] = row["accuracy"]
            metrics[f"{name}/passkey_digits@{row['target']}"] = row["accuracy_digits"]
        del model
    return {"eval": metrics}


def sts_subsample(evaluator, spec: dict[str, int]):
    """The same evaluator on a seeded sample of each subset (STS12-16) or split (STS-B, SICK-R) of its pairs."""
    from repro.data.sts import STS_YEARLY, STSPairs, STSTask
    from repro.evaluation.sts import STSEvaluator

    rng = random.Random(spec["seed"])
    tasks = []
    for task in evaluator.tasks.values():
        cap = spec["per_subset"] if task.name in STS_YEARLY else spec["per_split"]
        subsets = {}
        for sub, pairs in task.items():
            keep = sorted(rng.sample(range(len(pairs.gold)), min(cap, len(pairs.gold))))
            subsets[sub] = STSPairs([pairs.s1[i] for i in keep], [pairs.s2[i] for i in keep],
                                    [pairs.gold[i] for i in keep])
        tasks.append(STSTask(task.name, subsets, task.skipped, task.note))
    note = (f"seeded sample: <= {spec['per_subset']} pairs per STS12-16 subset, <= {spec['per_split']} "
            f"per STS-B / SICK-R test split (seed {spec['seed']})")
    return STSEvaluator(tasks, batch_size=evaluator.batch_size, note="; ".join(n for n in (evaluator.note, note) if n))


def _sts(encoder, evaluator) -> dict[str, Any]:
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        result = evaluator.evaluate(lambda s: encoder.encode(s, batch_size=evaluator.batch_size))
    n_pairs = sum(len(p.gold) for t in evaluator.tasks.values() for p in t.values())
    return {"sts": result.metrics, "pairs": n_pairs, "sentences": result.n_sentences,
            "seconds": round(time.perf_counter() - start, 1)}


def step_simcse(work: Path) -> dict[str, Any]:
    import torch
    import yaml
    from omegaconf import OmegaConf

    from repro.cli import StageContext
    from repro.evaluation.sts import STSEvaluator
    from repro.models.sentence_encoder import build_encoder
    from repro.schemas import EncoderConfig
    from repro.workflows.simcse import load_trained_encoder

    seconds = {"prepare_sentences": run_stage(work, "pipeline.prepare_sentences"),
               "train_simcse": run_stage(work, "pipeline.train_simcse", "--run", "unsup")}
    cfg = OmegaConf.load(work / "params.yaml")
    torch.set_num_threads(int(cfg.run.num_threads))
    note = str(cfg.simcse.data.note)
    full = STSEvaluator.from_dir(REPO / STS_ROOT, layout="tsv", batch_size=64, with_dev=False, note=note)
    sample = sts_subsample(full, STS_SUBSAMPLE)
    results: dict[str, Any] = {}
    minilm = build_encoder(EncoderConfig(**yaml.safe_load((REPO / MINILM_CONF).read_text()))).eval()
    results["minilm"] = _sts(minilm, sample)
    results["minilm_all_pairs"] = _sts(minilm, full)
    del minilm
    before = build_encoder(EncoderConfig(**OmegaConf.to_container(cfg.simcse.encoder))).eval()
    results["smollm2_llm2vec_before"] = _sts(before, sample)
    del before
    with contextlib.chdir(work):  # the stage's paths are relative to its working folder
        after = load_trained_encoder(cfg, StageContext(work, work / cfg.run.cache_dir, "", False), "unsup")
    results["smollm2_llm2vec_simcse"] = _sts(after, sample)
    return {"stage_s": seconds, "train": _read(work / "metrics/simcse/train_unsup.json"), "models": results,
            "sample_note": sample.note, "all_pairs_note": full.note,
            "config": {"train": OmegaConf.to_container(cfg.simcse.train),
                       "encoder": OmegaConf.to_container(cfg.simcse.encoder)}}


STEP_FUNCS = {"longlora": step_longlora, "full_ft": step_full_ft, "native": step_native, "simcse": step_simcse}


def step_fingerprint(step: str, work: Path) -> str:
    from repro.resume import code_version

    return content_fingerprint([step, (work / "params.yaml").read_text(), code_version(),
                                file_sha256(Path(__file__)), file_sha256(REPO / "data/shipped/MANIFEST.md"),
                                NATIVE, STS_SUBSAMPLE], length=16)


def run(steps: list[str], force: bool = False, extra: tuple[str, ...] = (), metrics: Path = METRICS,
        root: Path = WORK) -> None:
    """Run ``steps`` in order, skipping those already done with the same fingerprint (unless ``force``)."""
    metrics.mkdir(parents=True, exist_ok=True)
    for step in steps:
        work = prepare_work(step, extra, root)
        fp = step_fingerprint(step, work)
        out = metrics / f"{step}.json"
        if not force and out.is_file() and _read(out).get("fingerprint") == fp:
            log.info("%s: done already (fingerprint %s); --force reruns it", step, fp)
            continue
        log.info("%s: running in %s", step, work)
        start = time.perf_counter()
        result = STEP_FUNCS[step](work)
        result.update(step=step, fingerprint=fp, wall_s=round(time.perf_counter() - start, 1), machine=machine(),
                      overrides=["profile=real_cpu", *VARIANTS[step][1], *extra])
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        log.info("%s: %.0f s", step, result["wall_s"])


def main(argv: list[str] | None = None) -> None:
    from tools.real_cpu_page import write_page

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "report"))
    parser.add_argument("--only", choices=STEPS, action="append", help="run only this step (repeatable)")
    parser.add_argument("--force", action="store_true", help="rerun steps whose fingerprint is unchanged")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="a Hydra override for every step (a shrunk trial run; use it with --out)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write metrics, page and work folders under this folder instead of the committed places")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.extra and args.out is None:
        parser.error("--set changes the study: give --out so the committed metrics and page stay as they are")
    metrics, page, root = (METRICS, PAGE, WORK) if args.out is None else \
        (args.out / "metrics", args.out / "real_cpu.md", args.out / "work")
    if args.command == "run":
        run(args.only or list(STEPS), args.force, tuple(args.extra), metrics, root)
    write_page(metrics, page)
    log.info("wrote %s", page)


if __name__ == "__main__":
    main()
