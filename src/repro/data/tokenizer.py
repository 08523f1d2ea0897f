"""Tokenizers for the LongLoRA data: the model's own, or a small byte-level BPE for the tiny model.

LongLoRA (§4.1) fine-tunes Llama 2 with its own tokenizer; :func:`build_tokenizer` loads a model's tokenizer
from a Hugging Face path (optionally a GGUF file inside a folder). For the CPU "tiny" profile, whose model is
built from a config and has no tokenizer, it instead trains a byte-level BPE on the training texts with the
``tokenizers`` library and wraps it as a :class:`transformers.PreTrainedTokenizerFast`, so both paths expose
the same interface and save to a folder that ``AutoTokenizer.from_pretrained`` reads back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from repro.models.hf_common import load_tokenizer
from repro.schemas import TokenizerConfig

SPECIAL_TOKENS = ("<bos>", "<eos>", "<pad>", "<unk>")
TOKENIZER_KINDS = ("bpe", "pretrained")


def _capped(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    """Yield texts until ``max_chars`` characters have been yielded (0 = no cap)."""
    total = 0
    for text in texts:
        if max_chars and total + len(text) > max_chars:
            yield text[: max_chars - total]
            return
        total += len(text)
        yield text


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, min_frequency: int = 2, max_chars: int = 0
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE whose digits are single tokens and wrap it for ``transformers``.

    The pre-tokenizer splits every digit into its own piece before the GPT-2 byte-level split, so a number
    such as a passkey is a sequence of single-digit tokens (as in Llama's tokenizer) and can be copied
    digit by digit.

    Args:
        texts: training texts (consumed once).
        vocab_size: final vocabulary size, special tokens included; at least 256 + 4 so every byte fits.
        min_frequency: minimum count for a merge.
        max_chars: cap on the characters read from ``texts`` (0 = all).

    Returns:
        A fast tokenizer with ``<bos>``, ``<eos>``, ``<pad>``, ``<unk>`` set and no automatic special tokens.

    Raises:
        ValueError: if ``vocab_size`` is too small or no text is given.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    min_vocab = 256 + len(SPECIAL_TOKENS)
    if vocab_size < min_vocab:
        raise ValueError(f"tokenizer.vocab_size={vocab_size} is below {min_vocab} (256 bytes + specials)")
    seen = {"chars": 0}

    def counted() -> Iterator[str]:
        for text in _capped(texts, max_chars):
            seen["chars"] += len(text)
            yield text

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(counted(), trainer=trainer)
    if seen["chars"] == 0:
        raise ValueError("cannot train a BPE tokenizer: the training source yielded no text")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def load_pretrained_tokenizer(
    name_or_path: str, gguf_file: str | None = None
) -> PreTrainedTokenizerBase:
    """Load a model's tokenizer; set ``pad_token`` to ``eos_token`` when it has none (as LongLoRA does)."""
    tokenizer = load_tokenizer(name_or_path, gguf_file)
    if tokenizer.eos_token is None:
        raise ValueError(f"tokenizer of {name_or_path!r} has no eos_token; documents cannot be joined")
    return tokenizer


def build_tokenizer(
    cfg: TokenizerConfig,
    texts: Iterable[str] | None = None,
    model_name_or_path: str | None = None,
    model_gguf_file: str | None = None,
) -> PreTrainedTokenizerBase:
    """Build the tokenizer that ``cfg`` describes.

    Args:
        cfg: the tokenizer config.
        texts: training texts; required for ``kind="bpe"``, ignored otherwise.
        model_name_or_path: the model's path, used when ``cfg.name_or_path`` is ``None``.
        model_gguf_file: the model's GGUF file, used with ``model_name_or_path``.

    Raises:
        ValueError: unknown ``kind``, or a missing input it needs (named).
    """
    if cfg.kind == "bpe":
        if texts is None:
            raise ValueError("tokenizer.kind='bpe' needs training texts")
        return train_bpe_tokenizer(texts, cfg.vocab_size, cfg.min_frequency, cfg.train_max_chars)
    if cfg.kind == "pretrained":
        if cfg.name_or_path is not None:
            return load_pretrained_tokenizer(cfg.name_or_path, cfg.gguf_file)
        if model_name_or_path is None:
            raise ValueError(
                "tokenizer.name_or_path is null ('use the model's tokenizer') but no model path was given"
            )
        return load_pretrained_tokenizer(model_name_or_path, model_gguf_file)
    raise ValueError(f"tokenizer.kind must be one of {TOKENIZER_KINDS}, got {cfg.kind!r}")


def token_dtype_for(tokenizer: PreTrainedTokenizerBase):
    """``numpy.uint16`` when every id fits in 16 bits, else ``numpy.uint32``."""
    import numpy as np

    return np.uint16 if len(tokenizer) <= 2**16 else np.uint32
