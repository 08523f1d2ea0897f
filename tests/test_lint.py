"""The code passes ``ruff check`` with the project's configuration (``[tool.ruff]`` in ``pyproject.toml``)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("src", "pipeline", "tests", "benchmarks", "tools")


def _ruff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (it is in the dev extra: pip install -e '.[dev]')")
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=cwd, capture_output=True, text=True)


def test_ruff_check_passes():
    result = _ruff("check", "--no-cache", "--output-format", "concise", *CHECKED)
    assert result.returncode == 0, f"ruff check {' '.join(CHECKED)}:\n{result.stdout}{result.stderr}"


def test_ruff_reads_the_project_config_and_flags_an_unused_noqa(tmp_path):
    """The configuration in use is the project's: 125 columns, and a ``noqa`` that suppresses nothing fails."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    ok = "x = " + "1" * 121 + "\n"  # 125 columns
    (tmp_path / "ok.py").write_text(ok)
    (tmp_path / "bad.py").write_text("import os  # noqa: E731\n\nprint(os.sep)\n" + "y = " + "2" * 122 + "\n")  # 126 columns
    assert _ruff("check", "--no-cache", "ok.py", cwd=tmp_path).returncode == 0
    result = _ruff("check", "--no-cache", "--output-format", "concise", "bad.py", cwd=tmp_path)
    assert result.returncode == 1
    assert "RUF100" in result.stdout and "E501" in result.stdout, result.stdout
