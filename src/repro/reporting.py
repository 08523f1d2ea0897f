"""Markdown pages and PNG figures that put our numbers beside the papers'.

Everything here is read from the metrics/plots files the stages wrote and from the papers' reference
file (:mod:`repro.evaluation.references`); no number is typed in. A value that is missing (a stage
that did not run or failed) is printed as "missing", never dropped.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MISSING = "missing"


def read_json(path: Path) -> dict[str, Any] | None:
    """A metrics file, or None when it does not exist."""
    return json.loads(path.read_text()) if path.is_file() else None


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a plots CSV ([] when absent)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def fmt(value: Any, digits: int = 2) -> str:
    """A number for a table; None/NaN print as 'missing'."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return MISSING
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return str(value)


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 2) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c, digits) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(held: bool | None) -> str:
    """'held' / 'not held' / 'missing' for a claim check."""
    return MISSING if held is None else ("held" if held else "not held")


INCONCLUSIVE = "inconclusive at this scale"


@dataclass(frozen=True)
class Control:
    """A positive control: a run showing that the setup can exhibit the effect a claim is about.

    Attributes:
        ok: whether the control exhibits the effect; None when its inputs are missing.
        evidence: what the control measured (a table cell).
        reason: why a failed control leaves the claim undecided (shown in the verdict).
    """

    ok: bool | None
    evidence: str
    reason: str = ""


def controlled_verdict(held: bool | None, control: Control) -> str:
    """The verdict of a claim that stands on a positive control.

    'missing' when the claim's inputs are missing; "inconclusive at this scale (<reason>)" when the
    control is missing or fails (the setup could not have shown the effect, so neither "held" nor
    "not held" would mean anything); otherwise 'held' / 'not held'.
    """
    if held is None:
        return MISSING
    if control.ok is None:
        return f"{INCONCLUSIVE} (control missing)"
    if not control.ok:
        return f"{INCONCLUSIVE} ({control.reason or 'the control does not show the effect'})"
    return verdict(held)


CLAIM_HEADER = ("claim (paper)", "our evidence", "positive control", "verdict")


def claim_row(claim: str, evidence: str, held: bool | None, control: Control) -> list[str]:
    """One row of a claims table (:data:`CLAIM_HEADER`): the verdict follows from the control."""
    return [claim, evidence, control.evidence, controlled_verdict(held, control)]


def hardware() -> str:
    """One line describing the machine the report is built on, without importing torch.

    GPUs are counted from the NVIDIA driver's ``/proc`` entries; the torch version is the installed
    distribution's (its local label, e.g. ``+cpu``, says which build).
    """
    from importlib import metadata

    gpus = Path("/proc/driver/nvidia/gpus")
    n_gpu = len(list(gpus.iterdir())) if gpus.is_dir() else 0
    dev = f"{n_gpu}× NVIDIA GPU" if n_gpu else "CPU only"
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return f"{platform.machine()} {os.cpu_count()} cores, {dev}; torch {torch_version}"


def save_figure(fig, path: Path) -> str:
    """Save a matplotlib figure as PNG; return the path relative to the report folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f"figures/{path.name}"


def line_figure(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
                title: str, logx: bool = False):
    """A simple multi-line plot; ``series`` maps a label to (x, y)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, (x, y) in series.items():
        ax.plot(x, y, marker="o", label=label)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return fig


def write_page(path: Path, text: str) -> Path:
    """Write a report page atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text.rstrip() + "\n")
    os.replace(tmp, path)
    return path


def md_cell(text: Any) -> str:
    """Text made safe for one Markdown table cell (pipes escaped, line breaks flattened)."""
    return " ".join(str(text).replace("|", "\\|").split())


def trajectory_figure(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
                      title: str):
    """Paths through a 2-D plane, one per label, with arrows giving the direction of travel.

    The first point of each path is drawn as a square and every segment carries an arrow head, as in
    the alignment-uniformity trajectories of SimCSE Figure 2.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for label, (x, y) in series.items():
        (line,) = ax.plot(x, y, marker="o", markersize=3, label=label)
        if len(x):
            ax.plot(x[:1], y[:1], marker="s", color=line.get_color())
        for i in range(len(x) - 1):
            ax.annotate("", xy=(x[i + 1], y[i + 1]), xytext=(x[i], y[i]),
                        arrowprops={"arrowstyle": "->", "color": line.get_color(), "lw": 1.2})
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return fig
