"""Sentence encoder for SimCSE: a Hugging Face backbone + a pooler + an optional train-only MLP head.

Mirrors ``BertForCL`` / ``RobertaForCL`` and ``sentemb_forward`` of the reference repository
(princeton-nlp/SimCSE, ``simcse/models.py``): the backbone runs without BERT's own pooling layer,
the pooler picks or averages token states, and for the ``cls`` pooler a randomly initialised
Linear + tanh head is applied (in training always, at test time unless ``mlp_only_train``).
Unsupervised SimCSE's positive pairs come from dropout alone (paper §3): the same batch is encoded
twice, here as one pass over the duplicated batch, like the reference's duplicated inputs.

Backbones: a tiny BERT built from config (tests, the tiny profile), a packaged checkpoint located
without importing its package (all-MiniLM-L6-v2, the SmolLM2 GGUF), or a hub checkpoint
(bert-base-uncased, roberta-base/large, downloaded by transformers when online). The settings are
:class:`repro.schemas.EncoderConfig`; exports (Hugging Face, sentence-transformers) are in
:mod:`repro.models.simcse_export`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedTokenizerBase

from repro.models.hf_common import DTYPES, load_tokenizer, package_folder
from repro.models.pooling import MLPHead, Pooler, check_pooler, needs_hidden_states
from repro.schemas import EncoderConfig

__all__ = [
    "SentenceEncoder",
    "build_encoder",
    "build_tokenizer",
    "locate_package_folder",
    "position_limit",
]

_SOURCES = ("tiny", "package", "hub")
_DTYPES = DTYPES


def locate_package_folder(package: str) -> Path:
    """Folder of an installed package, found without importing it (its ``__init__`` may fail)."""
    return package_folder(package, "package")


def _model_path(cfg: EncoderConfig) -> str:
    if cfg.source == "package":
        folder = locate_package_folder(cfg.package)
        return str(folder / cfg.subfolder if cfg.subfolder else folder)
    if cfg.source == "hub":
        if not cfg.name_or_path:
            raise ValueError("source='hub' needs 'name_or_path' (e.g. bert-base-uncased)")
        return cfg.name_or_path
    raise ValueError(f"unknown encoder source {cfg.source!r} (key 'source'); valid: {', '.join(_SOURCES)}")


def build_tokenizer(cfg: EncoderConfig, tokenizer_dir: str | Path | None = None) -> PreTrainedTokenizerBase:
    """Tokenizer for the encoder: the data stage's folder for "tiny", the checkpoint's otherwise.

    Decoder tokenizers without a pad token get ``pad = eos`` (the ``last`` pooler copes with either
    padding side).
    """
    if cfg.source == "tiny":
        path = tokenizer_dir or cfg.tokenizer_path
        if not path:
            raise ValueError("source='tiny' needs 'tokenizer_path' (or build_encoder(tokenizer_dir=...))")
        if not Path(path).is_dir():
            raise FileNotFoundError(f"tokenizer folder {path} (key 'tokenizer_path') does not exist")
        tok = AutoTokenizer.from_pretrained(str(path))
    else:
        tok = load_tokenizer(_model_path(cfg), cfg.gguf_file)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"tokenizer of {cfg.source}:{cfg.name_or_path or cfg.package} has no pad or eos token")
        tok.pad_token = tok.eos_token
    return tok


def _apply_dropout(config: Any, dropout: float | None) -> None:
    """Override every dropout probability the backbone config exposes (BERT, RoBERTa, Llama names)."""
    if dropout is None:
        return
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"'dropout' must be in [0, 1); got {dropout}")
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout", "dropout"):
        if hasattr(config, key):
            setattr(config, key, dropout)


TINY_ARCH_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings")


def _pretrained_tiny(folder: Path, config: BertConfig, dtype: torch.dtype) -> nn.Module:
    """The tiny BERT with the weights of ``folder`` (``simcse.encoder.init_from``), checked against ``config``."""
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"simcse.encoder.init_from={folder}: no pretrained tiny BERT there (no config.json); "
                                "run the simcse_pretrain stage first")
    saved = BertConfig.from_pretrained(folder)
    for key in TINY_ARCH_KEYS:
        if getattr(saved, key) != getattr(config, key):
            raise ValueError(f"simcse.encoder.init_from={folder}: its {key} is {getattr(saved, key)}, the encoder "
                             f"config's is {getattr(config, key)}; rerun simcse_pretrain for this architecture")
    return BertModel.from_pretrained(folder, config=config, add_pooling_layer=False, dtype=dtype)


def _load_backbone(cfg: EncoderConfig, tokenizer: PreTrainedTokenizerBase) -> nn.Module:
    dtype = _DTYPES.get(cfg.dtype)
    if dtype is None:
        raise ValueError(f"unknown dtype {cfg.dtype!r} (key 'dtype'); valid: {', '.join(_DTYPES)}")
    if cfg.source == "tiny":
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size,
            max_position_embeddings=max(cfg.max_position_embeddings, cfg.max_length),
            pad_token_id=tokenizer.pad_token_id,
        )
        _apply_dropout(config, cfg.dropout)
        if cfg.init_from:  # the simcse_pretrain stage's MLM weights
            return _pretrained_tiny(Path(cfg.init_from), config, dtype)
        # the reference builds BERT with add_pooling_layer=False; its own MLP head replaces it
        return BertModel(config, add_pooling_layer=False).to(dtype)
    path = _model_path(cfg)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if cfg.gguf_file:
        kwargs["gguf_file"] = cfg.gguf_file
    config = AutoConfig.from_pretrained(path, **({"gguf_file": cfg.gguf_file} if cfg.gguf_file else {}))
    _apply_dropout(config, cfg.dropout)
    model = AutoModel.from_pretrained(path, config=config, **kwargs)
    # The reference builds BERT/RoBERTa with add_pooling_layer=False: the checkpoint's pooler never
    # reaches the loss, and under DDP an unused parameter fails the gradient reduction. Its weights
    # are kept aside, for the MLP head when ``mlp_from_pooler`` asks for them.
    pooler = getattr(model, "pooler", None)
    if isinstance(pooler, nn.Module):
        dense = getattr(pooler, "dense", None)
        model._released_pooler = (  # plain attribute, not a submodule: not trained, not saved
            {"weight": dense.weight.detach().clone(), "bias": dense.bias.detach().clone()}
            if isinstance(dense, nn.Linear) else None
        )
        model.pooler = None
    # GGUF weights are dequantised into plain Linear layers; forget the quantizer so saving works
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def position_limit(backbone: nn.Module, tokenizer: PreTrainedTokenizerBase) -> int:
    """Longest input (in tokens, specials included) the backbone accepts.

    ``max_position_embeddings``, less RoBERTa's offset (positions start after ``padding_idx``), and
    no more than the tokenizer's ``model_max_length`` when that is a real limit (not the 1e30 sentinel).
    """
    config = backbone.config
    limit = int(getattr(config, "max_position_embeddings", 0) or 0) or 10**6
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= int(config.pad_token_id or 0) + 1
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 10**6:
        limit = min(limit, tok_limit)
    return limit


class SentenceEncoder(nn.Module):
    """Backbone + pooler + optional MLP head, mapping token ids to sentence embeddings.

    Args:
        backbone: a transformers base model returning ``last_hidden_state`` (and ``hidden_states``).
        tokenizer: the matching tokenizer (used by :meth:`encode` and the exports).
        cfg: the encoder config (pooler, mlp_only_train, max_length).
    """

    def __init__(self, backbone: nn.Module, tokenizer: PreTrainedTokenizerBase, cfg: EncoderConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.pooler = Pooler(cfg.pooler)
        hidden = backbone.config.hidden_size
        self.mlp = MLPHead(hidden).to(next(backbone.parameters()).dtype) if cfg.pooler == "cls" else None
        self._all_layers = needs_hidden_states(cfg.pooler)
        self.eval_max_length = position_limit(backbone, tokenizer)
        if cfg.mlp_from_pooler:
            released = getattr(backbone, "_released_pooler", None)
            if self.mlp is None or released is None:
                raise ValueError(
                    "'mlp_from_pooler' needs pooler 'cls' and a checkpoint with a pooler (pooler.dense); "
                    f"got pooler {cfg.pooler!r}, checkpoint pooler {'present' if released else 'absent'}"
                )
            with torch.no_grad():
                self.mlp.dense.weight.copy_(released["weight"])
                self.mlp.dense.bias.copy_(released["bias"])

    @property
    def embedding_dim(self) -> int:
        """Width d of the sentence embeddings."""
        return int(self.backbone.config.hidden_size)

    def uses_mlp(self) -> bool:
        """Whether the MLP head is applied in the current mode (train: always; eval: unless mlp_only_train)."""
        return self.mlp is not None and (self.training or not self.cfg.mlp_only_train)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """Embed a batch: [B, T] ids and mask -> [B, d] embeddings."""
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        mask = attention_mask
        if self.cfg.bidirectional:
            # LLM2Vec: each token attends to every non-padding token of its sentence. transformers uses a
            # prepared 4D mask as it is, instead of building the causal one.
            keep = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, T]
            mask = keep.expand(-1, 1, attention_mask.shape[1], -1)  # [B, 1, T, T]
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=mask,
            output_hidden_states=self._all_layers,
            return_dict=True,
            **kwargs,
        )
        pooled = self.pooler(out.last_hidden_state, attention_mask, out.hidden_states)  # [B, d]
        if self.uses_mlp():
            pooled = self.mlp(pooled)
        return pooled

    def forward_views(
        self, input_ids: Tensor, attention_mask: Tensor, n_views: int = 2, fixed_dropout: bool = False
    ) -> Tensor:
        """Encode every sentence ``n_views`` times; in training the views differ only by dropout.

        Default: one pass over the duplicated batch (each row repeated, like the reference's
        duplicated ``input_ids`` of shape [bs, 2, len]), so every copy draws its own dropout mask.
        ``fixed_dropout`` (paper Table 3, "fixed 0.1"): one pass per view with the RNG reset to the
        same state before each, so all views share one dropout mask and are identical.

        Args:
            input_ids: [B, T] token ids.
            attention_mask: [B, T] mask.
            n_views: number of views V.
            fixed_dropout: share the dropout mask between views.

        Returns:
            [B, V, d] embeddings.
        """
        batch = input_ids.shape[0]
        if not fixed_dropout:
            ids = input_ids.repeat_interleave(n_views, dim=0)  # [B*V, T], rows (s0, s0, s1, s1, ...)
            mask = attention_mask.repeat_interleave(n_views, dim=0)  # [B*V, T]
            return self(ids, mask).view(batch, n_views, -1)  # [B, V, d]
        state = _rng_state(input_ids.device)
        views = []
        for _ in range(n_views):
            _set_rng_state(state, input_ids.device)
            views.append(self(input_ids, attention_mask))  # [B, d]
        return torch.stack(views, dim=1)  # [B, V, d]

    def tokenize(self, sentences: list[str], max_length: int | None = None) -> dict[str, Tensor]:
        """Tokenise with padding to the batch maximum; truncate only at ``max_length``.

        Args:
            sentences: the sentences.
            max_length: token limit; default the model's position limit (:func:`position_limit`),
                i.e. the whole sentence, as SentEval's batcher encodes it. Training batches pass
                ``cfg.max_length`` (32) instead, through the collator.
        """
        limit = self.eval_max_length if max_length is None else min(max_length, self.eval_max_length)
        enc = self.tokenizer(list(sentences), padding=True, truncation=True, max_length=limit, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def encode(self, sentences: list[str], batch_size: int = 64, device: str | torch.device | None = None) -> Tensor:
        """Embed sentences in eval mode (no dropout), batching by length; results in input order.

        Sentences are not truncated to the training ``max_length`` (SentEval pads and never truncates;
        SimCSE's ``evaluation.py`` scores full sentences), only at the model's position limit.

        Args:
            sentences: the sentences.
            batch_size: sentences per forward pass.
            device: where to run (default: the encoder's device).

        Returns:
            [N, d] float32 embeddings on the CPU, row i for ``sentences[i]``.
        """
        if isinstance(sentences, str):
            raise TypeError("encode expects a list of sentences, not one string")
        device = torch.device(device) if device is not None else next(self.parameters()).device
        was_training = self.training
        self.eval()
        order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))  # longest first
        out = torch.empty(len(sentences), self.embedding_dim)
        try:
            with torch.inference_mode():
                for start in range(0, len(order), batch_size):
                    idx = order[start : start + batch_size]
                    batch = self.tokenize([sentences[i] for i in idx])
                    emb = self(batch["input_ids"].to(device), batch["attention_mask"].to(device))  # [b, d]
                    out[torch.tensor(idx)] = emb.float().cpu()
        finally:
            self.train(was_training)
        return out


def build_encoder(cfg: EncoderConfig, tokenizer_dir: str | Path | None = None) -> SentenceEncoder:
    """Build tokenizer + backbone + pooler (+ head) from the config.

    Args:
        cfg: encoder settings.
        tokenizer_dir: tokenizer folder for the tiny encoder (overrides ``cfg.tokenizer_path``).

    Returns:
        The encoder in training mode.
    """
    if cfg.source not in _SOURCES:
        raise ValueError(f"unknown encoder source {cfg.source!r} (key 'source'); valid: {', '.join(_SOURCES)}")
    check_pooler(cfg.pooler)
    if cfg.is_decoder and cfg.pooler not in ("mean", "last", "avg"):
        raise ValueError(f"decoder backbones have no CLS token; use pooler 'mean' or 'last' (got {cfg.pooler!r})")
    tokenizer = build_tokenizer(cfg, tokenizer_dir)
    encoder = SentenceEncoder(_load_backbone(cfg, tokenizer), tokenizer, cfg)
    return encoder.train()
