"""Stage scripts start light: importing one pulls in no torch, transformers, lightning or wandb.

The heavy imports happen once the stage runs, so a usage error is immediate and the report stage, which
needs none of them, never pays for them.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.provenance import stage_scripts

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "lightning", "wandb", "peft", "datasets")
SCRIPTS = sorted({script for script, _ in stage_scripts(ROOT / "dvc.yaml").values()})


@pytest.mark.parametrize("script", SCRIPTS)
def test_stage_script_imports_nothing_heavy(script):
    module = script[:-3].replace("/", ".")
    code = f"import sys, json, {module}; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [], f"{script} imports {out.strip()} at module level"
