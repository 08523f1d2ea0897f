"""Where the project checkout is: the folder that holds ``dvc.yaml`` and ``conf/``.

A module of its own, so that whatever needs the checkout (:mod:`repro.cli` for the stage scripts, the
tools) imports nothing else for it.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_CHECKOUT = Path(__file__).resolve().parents[2]  # the checkout of an editable install


def find_repo_root(start: Path | None = None) -> Path:
    """The project checkout that contains ``start`` (default: the working directory).

    The nearest folder at or above ``start`` holding ``dvc.yaml`` and ``conf/`` (the project's own
    layout, as DVC runs stages from there); else the nearest git or DVC root; else the checkout this
    package was installed from. So a second clone sharing one virtual environment reads and writes
    its own ``conf/``, ``params.yaml`` and ``.cache/``, not the first clone's.
    """
    start = (start or Path.cwd()).resolve()
    chain = [start, *start.parents]
    for folder in chain:
        if (folder / "dvc.yaml").is_file() and (folder / "conf").is_dir():
            return folder
    for folder in chain:
        if (folder / ".dvc").is_dir() or (folder / ".git").exists():
            return folder
    return _PACKAGE_CHECKOUT
