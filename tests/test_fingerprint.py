"""The shared fingerprint helper gives the same keys the three call sites computed before it existed."""

import hashlib
import json

import pytest
from omegaconf import OmegaConf

from repro.fingerprint import file_sha256, fingerprint


def test_json_part_matches_a_hand_hashed_canonical_json():
    value = {"b": [1, 2, {"z": 0.5}], "a": "x"}
    expected = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
    assert fingerprint(value) == expected
    assert fingerprint(value, length=12) == expected[:12]


def test_omegaconf_nodes_hash_like_their_containers_at_any_depth():
    node = OmegaConf.create({"lr": 1e-3, "sizes": [1, 2]})
    plain = [{"lr": 1e-3, "sizes": [1, 2]}, 7]
    expected = hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()
    assert fingerprint([node, 7]) == expected
    assert fingerprint({"k": node}) == fingerprint({"k": {"lr": 1e-3, "sizes": [1, 2]}})


def test_files_extend_the_digest_with_path_and_content(tmp_path):
    a = tmp_path / "a.txt"
    a.write_bytes(b"hello")
    digest = hashlib.sha256(json.dumps({"v": 1}, sort_keys=True).encode())
    digest.update(str(a).encode() + b"\0" + hashlib.sha256(b"hello").hexdigest().encode())
    assert fingerprint({"v": 1}, files=[a]) == digest.hexdigest()
    assert file_sha256(a) == hashlib.sha256(b"hello").hexdigest()
    before = fingerprint({"v": 1}, files=[a])
    a.write_bytes(b"hellO")
    assert fingerprint({"v": 1}, files=[a]) != before


def test_missing_input_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        fingerprint({}, files=[tmp_path / "nope.txt"])


def test_call_sites_delegate_to_the_helper():
    from repro.data import lm_data
    from repro.workflows import longlora

    obj = {"tokenizer": "x", "n": 3}
    assert lm_data._fingerprint(obj) == hashlib.sha256(
        json.dumps({"format": lm_data.FORMAT_VERSION, "obj": obj}, sort_keys=True).encode()).hexdigest()
    node = OmegaConf.create({"a": 1})
    assert longlora._fingerprint(node, "s", 3) == hashlib.sha256(
        json.dumps([{"a": 1}, "s", 3], sort_keys=True).encode()).hexdigest()[:12]
