"""SimCSE checkpoints in the reference's formats, both ways.

* :func:`export_hf` writes what the reference's ``simcse_to_huggingface.py`` produces: a plain
  Hugging Face backbone folder whose ``pooler`` *is* the trained MLP head (the script renames
  ``mlp.*`` to ``pooler.*``). ``AutoModel.from_pretrained`` then gives ``pooler_output`` = our
  embedding with the head, so the reference's ``evaluation.py --pooler cls`` scores it, and
  ``--pooler cls_before_pooler`` scores the headless (unsup) embedding.
* :func:`export_sentence_transformers` writes a sentence-transformers folder with the right pooling
  (Pooling cls/mean/lasttoken, plus Dense+tanh when the head is kept at test time).
* :func:`load_released` loads a released checkpoint (the ``princeton-nlp/...`` layout: BERT/RoBERTa
  with the MLP as its pooler) with the pooler its model card states: ``cls`` for supervised models
  (the pooler output), ``cls_before_pooler`` for unsupervised ones (SimCSE's ``simcse/tool.py``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedTokenizerBase

from repro.models.sentence_encoder import SentenceEncoder, build_encoder
from repro.schemas import EncoderConfig

__all__ = ["RELEASED_POOLERS", "export_hf", "export_sentence_transformers", "load_released", "released_pooler"]

# sentence-transformers Pooling modes equivalent to our poolers (layer-averaging ones have none)
_ST_TEXT_ONLY = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}
_ST_POOLING = {"cls": "cls", "cls_before_pooler": "cls", "avg": "mean", "mean": "mean", "last": "lasttoken"}
# Model cards / simcse/tool.py: supervised checkpoints are used with the pooler output ("cls"),
# unsupervised ones with the CLS state before it ("cls_before_pooler").
RELEASED_POOLERS = {"sup": "cls", "unsup": "cls_before_pooler"}


def released_pooler(name: str) -> str:
    """The pooler a released checkpoint's card names: ``sup-simcse-*`` → cls, ``unsup-simcse-*`` → cls_before_pooler."""
    base = Path(str(name).rstrip("/")).name.lower()
    for prefix in ("unsup", "sup"):  # "unsup" first: it contains "sup"
        if base.startswith(prefix + "-simcse"):
            return RELEASED_POOLERS[prefix]
    raise ValueError(
        f"cannot tell the pooler of {name!r} from its name (expected 'sup-simcse-*' or 'unsup-simcse-*'); "
        "pass pooler= explicitly"
    )


def load_released(name_or_path: str, pooler: str | None = None, max_length: int = 32) -> SentenceEncoder:
    """A released SimCSE checkpoint (``princeton-nlp/{sup,unsup}-simcse-*`` or a local copy) as an encoder.

    Args:
        name_or_path: hub id or folder in the released layout (backbone + pooler = trained MLP).
        pooler: override; default from the name (:func:`released_pooler`).
        max_length: training truncation length (evaluation never truncates to it).

    Returns:
        The encoder in eval mode; with ``cls`` its head carries the checkpoint's pooler weights.
    """
    pooler = pooler or released_pooler(name_or_path)
    cfg = EncoderConfig(source="hub", name_or_path=str(name_or_path), pooler=pooler, mlp_only_train=False,
                        mlp_from_pooler=pooler == "cls", max_length=max_length)
    return build_encoder(cfg).eval()


def export_hf(encoder: SentenceEncoder, out_dir: str | Path) -> Path:
    """Save backbone + tokenizer with the trained MLP head as the backbone's pooler (``simcse_to_huggingface.py``).

    BERT-like backbones get a pooler whose ``dense`` holds the head's weights (when the encoder has a
    head); backbones without a pooler concept (decoders) are saved as they are. The saved
    ``config.json`` records the pooler to use in ``simcse_pooler`` (``cls`` when the head is kept
    at test time, else the encoder's pooler).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    backbone = encoder.backbone
    keep_mlp = encoder.mlp is not None and not encoder.cfg.mlp_only_train
    if encoder.mlp is not None:
        config = AutoConfig.from_pretrained(_saved_config(backbone))
        with_pooler = AutoModel.from_config(config)  # fresh modules, pooler included
        pooler = getattr(with_pooler, "pooler", None)
        if isinstance(pooler, nn.Module) and isinstance(getattr(pooler, "dense", None), nn.Linear):
            missing, unexpected = with_pooler.load_state_dict(backbone.state_dict(), strict=False)
            if unexpected or any(not k.startswith("pooler.") for k in missing):
                raise RuntimeError(f"export_hf: backbone weights do not fit {type(with_pooler).__name__}: "
                                   f"missing {missing}, unexpected {unexpected}")
            with torch.no_grad():
                pooler.dense.weight.copy_(encoder.mlp.dense.weight)
                pooler.dense.bias.copy_(encoder.mlp.dense.bias)
            backbone = with_pooler.to(next(encoder.backbone.parameters()).dtype)
    backbone.config.simcse_pooler = "cls" if keep_mlp else encoder.cfg.pooler
    # a decoder trained with bidirectional attention (LLM2Vec) must be loaded so; transformers' own classes
    # attend causally, so the flag is recorded for the loader (repro.models.sentence_encoder builds it)
    backbone.config.simcse_bidirectional = bool(encoder.cfg.bidirectional)
    backbone.save_pretrained(str(out))
    for key in ("simcse_pooler", "simcse_bidirectional"):
        if hasattr(encoder.backbone.config, key):
            delattr(encoder.backbone.config, key)
    encoder.tokenizer.save_pretrained(str(out))
    return out


def _saved_config(backbone: nn.Module) -> str:
    folder = tempfile.mkdtemp(prefix="simcse-config-")
    backbone.config.save_pretrained(folder)
    return folder


def export_sentence_transformers(
    encoder: SentenceEncoder, tokenizer: PreTrainedTokenizerBase | None = None, out_dir: str | Path = "."
) -> Path:
    """Write a sentence-transformers folder that reproduces :meth:`SentenceEncoder.encode`.

    Modules: Transformer (backbone, ``max_seq_length`` = the model's position limit, as evaluation
    does not truncate) → Pooling (cls / mean / lasttoken) → Dense(d, d, tanh) carrying the MLP
    head's weights when the head is kept at test time (``cls`` pooler without ``mlp_only_train``, as
    the reference's ``sentemb_forward``).

    Returns:
        The folder, loadable with ``SentenceTransformer(out_dir)``.
    """
    try:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
    except ImportError as err:  # a dev extra, not a core dependency
        raise ImportError("export_sentence_transformers needs sentence-transformers (pip install -e .[dev])") from err
    if encoder.cfg.bidirectional:
        raise ValueError("a bidirectional decoder (simcse.encoder.bidirectional, LLM2Vec) has no sentence-transformers "
                         "equivalent: its Transformer module would attend causally; use the hf/ export or encoder.pt")
    mode = _ST_POOLING.get(encoder.cfg.pooler)
    if mode is None:
        raise ValueError(
            f"pooler {encoder.cfg.pooler!r} has no sentence-transformers equivalent; "
            f"exportable poolers: {', '.join(_ST_POOLING)}"
        )
    tok = tokenizer if tokenizer is not None else encoder.tokenizer
    keep_mlp = encoder.mlp is not None and not encoder.cfg.mlp_only_train
    out = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        encoder.backbone.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        modules: list[nn.Module] = [
            # text only: with a chat template sentence-transformers would otherwise wrap inputs as chat messages
            Transformer(
                tmp,
                max_seq_length=encoder.eval_max_length,
                modality_config=_ST_TEXT_ONLY,
                module_output_name="token_embeddings",
            ),
            Pooling(encoder.embedding_dim, pooling_mode=mode),
        ]
        if keep_mlp:
            dense = encoder.mlp.dense
            modules.append(
                Dense(
                    encoder.embedding_dim,
                    encoder.embedding_dim,
                    activation_function=nn.Tanh(),
                    init_weight=dense.weight.detach().clone().float(),
                    init_bias=dense.bias.detach().clone().float(),
                )
            )
        SentenceTransformer(modules=modules, device="cpu").save(str(out))
    (out / "simcse_export.json").write_text(json.dumps({"pooler": encoder.cfg.pooler, "mlp": keep_mlp}) + "\n")
    return out
