"""A copy of this checkout for the integration tests: its files without outputs, and a stage environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# what a copy leaves out: DVC outputs and committed results (the copy makes its own)
OUTPUTS = ("data/", "models/", "metrics/", "plots/", "reports/", "dvc.lock")


def copy_checkout(repo_root: Path, dest: Path) -> Path:
    """Copy the tracked and untracked-but-not-ignored files of ``repo_root`` to ``dest``, outputs left out."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=repo_root,
                           capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        src = repo_root / rel
        if src.is_file() and not rel.startswith(OUTPUTS):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def stage_env() -> dict[str, str]:
    """The environment stages run in here: W&B offline, no hub, this interpreter's scripts first on PATH."""
    return {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
