"""The one dtype map, package-folder lookup and tokenizer loader behind both papers' models."""

import pytest
import torch

from repro.models import hf_common, longlora, sentence_encoder
from repro.models.hf_common import load_tokenizer, package_folder, torch_dtype


def test_dtype_names_map_to_torch_dtypes_and_bad_names_name_the_key():
    assert torch_dtype("bfloat16") is torch.bfloat16 and torch_dtype("float32") is torch.float32
    with pytest.raises(ValueError, match="simcse.encoder.dtype='fp8'"):
        torch_dtype("fp8", "simcse.encoder.dtype")
    assert longlora._DTYPES is hf_common.DTYPES and sentence_encoder._DTYPES is hf_common.DTYPES


def test_package_folder_is_found_without_importing_the_package(tmp_path, monkeypatch):
    pkg = tmp_path / "fails_on_import"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert package_folder("fails_on_import") == pkg
    assert longlora.gguf_folder("fails_on_import") == pkg
    with pytest.raises(FileNotFoundError, match="longlora.model.gguf_package='no_such_pkg'"):
        longlora.gguf_folder("no_such_pkg")


def test_tokenizer_without_pad_gets_eos_as_pad(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<eos>": 0, "<unk>": 1, "a": 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>").save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.pad_token == "<eos>" and loaded.pad_token_id == 0
