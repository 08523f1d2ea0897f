"""The data shipped for the tiny models: every file listed with its licence and sha256, nothing unlisted."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tools.ship_data import FILES, manifest_rows

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "shipped"
SHARED = ROOT.parent / "shared" / "data"


def test_every_shipped_file_is_listed_with_its_sha256_size_and_licence():
    rows = manifest_rows(SHIPPED)
    on_disk = {p.relative_to(SHIPPED).as_posix() for p in SHIPPED.rglob("*") if p.is_file()} - {"MANIFEST.md"}
    assert on_disk == set(rows), "files under data/shipped and the manifest's rows differ"
    for path, cells in rows.items():
        data = (SHIPPED / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == cells[-1].strip("`"), path
        assert int(cells[-2]) == len(data), path
        assert cells[2] and cells[3] and cells[5], f"{path}: source, commit and licence must be stated"
    assert sum((SHIPPED / p).stat().st_size for p in rows) < 12_000_000  # a few MB


def test_the_tool_lists_exactly_the_shipped_files():
    assert {dest for _, dest, _ in FILES} == set(manifest_rows(SHIPPED))


@pytest.mark.skipif(not (SHARED / "MANIFEST.md").is_file(), reason="no ../shared/data here")
def test_shipped_files_are_byte_copies_of_the_shared_sources():
    for src, dest, _ in FILES:
        assert (SHARED / src).read_bytes() == (SHIPPED / dest).read_bytes(), dest


def test_the_shipped_configs_read_only_shipped_files(tmp_path):
    """`data=shipped` and `sentence_data=shipped` point inside data/shipped only, and their readers load it."""
    import yaml

    from repro.compose import compose_params
    from repro.data.simcse_data import prepare_simcse_data
    from repro.data.text_sources import build_source
    from repro.schemas import SourceConfig

    cfg = yaml.safe_load(compose_params(tmp_path / "params.yaml", ["data=shipped", "sentence_data=shipped"]).read_text())
    ll, sd = cfg["longlora"]["data"], cfg["simcse"]["data"]
    sources = {"train": ll["train"], **ll["eval_sets"]}
    for name, src in sources.items():
        assert src["path"].startswith("data/shipped/"), name
        docs = list(build_source(SourceConfig(**src), ROOT))
        assert docs and all(len(d) > 20_000 for d in docs), name  # whole books / chapters, headers stripped
        assert not any("*** START OF" in d for d in docs), name
    assert set(ll["roles"].values()) <= set(ll["eval_sets"])
    for key in ("wiki_path", "nli_path", "sts_root"):
        assert sd[key].startswith("data/shipped/") and (ROOT / sd[key]).exists(), key
    manifest = prepare_simcse_data({**sd, "wiki_path": str(ROOT / sd["wiki_path"]), "nli_path": str(ROOT / sd["nli_path"]),
                                    "sts_root": str(ROOT / sd["sts_root"]), "max_sentences": 200, "max_triplets": 100},
                                   tmp_path / "simcse")
    sts = manifest["counts"]["sts"]
    assert sts["stsb"] == {"dev": 1500, "test": 1103} and sts["sickr"] == {"test": 3942, "trial": 500}
    assert sum(sts["sts12"].values()) == 2714 and manifest["counts"]["train_sentences"] == 200


def test_the_default_profile_runs_on_shipped_real_data_and_names_no_synthetic_set():
    """params.yaml (the default `dvc repro` runs) reads only data/shipped, and no committed metric names a synthetic set."""
    import json

    import yaml

    cfg = yaml.safe_load((ROOT / "params.yaml").read_text())
    ll, sc = cfg["longlora"]["data"], cfg["simcse"]
    for name, src in {"train": ll["train"], **ll["eval_sets"]}.items():
        assert src["kind"] == "local" and src["path"].startswith("data/shipped/"), name
        assert "synthetic" not in name
    assert sc["data"]["source"] == "local" and sc["data"]["sts_root"].startswith("data/shipped/")
    assert sc["transfer"]["data_dir"].startswith("data/shipped/")
    for path in (ROOT / "metrics").rglob("*.json"):
        if "real_cpu" in path.parts:
            continue
        data = json.loads(path.read_text())
        names = [k for k in data if "synthetic" in k.lower()]
        names += [f"{k}={v}" for k, v in data.items() if k in ("eval_set", "note") and "synthetic" in str(v).lower()]
        assert not names, (path, names[:5])
