"""Entry-point plumbing shared by the ``pipeline/`` scripts.

A stage script is run two ways:

* by DVC: ``python -m pipeline.train --params params.yaml`` reads the composed ``params.yaml``
  (DVC's Hydra integration wrote it from ``conf/``) and writes to the fixed paths that ``dvc.yaml``
  declares;
* by hand or as a Hydra sweep: ``python -m pipeline.train -m attention=full,s2`` composes ``conf/``
  with Hydra; each job writes into its own Hydra output folder and is its own W&B run, grouped by
  sweep.

Either way the config is validated against the typed schema (:mod:`repro.config`) before anything
heavy happens, so a typo fails with the key's name.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from repro.paths import find_repo_root

log = logging.getLogger("repro")

_SWEEP_SYNTAX = ("range(", "choice(", "glob(", "interval(")


REPO_ROOT = find_repo_root()


@dataclass(frozen=True)
class StageContext:
    """Where a stage writes and how its W&B run is grouped.

    Attributes:
        out_root: root for this run's outputs: the repo root under DVC, the Hydra job folder in a sweep.
        cache_root: shared cache for prepared data and base models (content-addressed in sweeps).
        group: W&B group (experiment name, or the sweep's name).
        sweep: whether this is a Hydra job rather than a DVC stage.
        options: stage options given after ``--params FILE`` as ``--name value`` (e.g. ``--run sup``).
        job_tags: in a sweep, this job's values of the swept keys (``(("temperature", "0.05"),)``), for
            run names that tell the jobs apart.
    """

    out_root: Path
    cache_root: Path
    group: str
    sweep: bool
    options: tuple[tuple[str, str], ...] = ()
    job_tags: tuple[tuple[str, str], ...] = ()

    def option(self, name: str, default: str | None = None) -> str | None:
        """The value of ``--name`` given on the command line (DVC mode), else ``default``."""
        return dict(self.options).get(name, default)

    def path(self, relative: str | Path) -> Path:
        """A path under the run's output root."""
        return self.out_root / relative


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _set_threads(cfg: DictConfig) -> None:
    """Apply ``run.num_threads`` without importing torch: stages that never need it (the report) stay light.

    With torch already imported its intra-op pool is resized; otherwise
    ``OMP_NUM_THREADS`` is set, which torch reads for that pool when the stage imports it.
    """
    n = int(cfg.run.num_threads)
    if n <= 0:
        return
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)


def _experiment_group(cfg: DictConfig) -> str:
    return str(cfg.wandb.group or cfg.run.experiment or "default")


def swept_keys(argv: list[str]) -> list[str]:
    """Config keys a Hydra multirun command line sweeps over (``key=a,b`` or ``key=range(...)``, etc.)."""
    keys = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        if "," in value or value.startswith(_SWEEP_SYNTAX):
            keys.append(key.lstrip("+~"))
    return keys


def sweep_group(base: str, argv: list[str], sweep_dir: str | Path) -> str:
    """W&B group of a sweep: ``<base>-sweep-<swept overrides>-<date>_<time>`` (at most 128 characters).

    ``sweep_dir`` is Hydra's ``multirun/<date>/<time>`` folder, the same for every job of the sweep.
    """
    swept = [a for a in argv if swept_keys([a])]
    what = "_".join(a.replace("/", ".").replace(" ", "") for a in swept) or "sweep"
    when = "_".join(Path(sweep_dir).parts[-2:])
    head = f"{base}-sweep-"
    return head + what[: 128 - len(head) - len(when) - 1] + "-" + when


def job_tags(argv: list[str], task_overrides: list[str]) -> tuple[tuple[str, str], ...]:
    """This job's values of the swept keys, keyed by the key's last component (``temperature``).

    ``ablations.*`` keys are left out: an ablation variant's run name already says which variant it is.
    """
    swept = {k for k in swept_keys(argv) if not k.startswith("ablations.")}
    tags = []
    for override in task_overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~") in swept:
            tags.append((key.split(".")[-1], value))
    return tuple(tags)


def _resolve(task: Callable[[DictConfig, StageContext], None] | str) -> Callable[[DictConfig, StageContext], None]:
    if callable(task):
        return task
    module, _, name = task.partition(":")
    import importlib

    return getattr(importlib.import_module(module), name)


def run_stage(task: Callable[[DictConfig, StageContext], None] | str) -> None:
    """Run ``task(cfg, ctx)`` from the command line (see module docstring).

    ``--params FILE [--name value ...]`` selects DVC mode; any other arguments are Hydra overrides.
    ``task`` may be ``"module:function"``, imported only when the stage runs, so that importing a
    stage script stays light.
    """
    from repro.config import validate

    task = _resolve(task)
    _configure_logging()
    argv = sys.argv[1:]
    if argv and argv[0] == "--params":
        rest = argv[2:]
        if len(argv) < 2 or len(rest) % 2 or not all(a.startswith("--") for a in rest[::2]):
            raise SystemExit("usage: python -m pipeline.<stage> --params params.yaml [--name value ...]")
        params = Path(argv[1])
        if not params.is_file():
            raise SystemExit(f"params file not found: {params}")
        cfg = validate(OmegaConf.load(params))
        options = tuple((k[2:], v) for k, v in zip(rest[::2], rest[1::2], strict=True))
        _set_threads(cfg)
        ctx = StageContext(Path.cwd(), Path.cwd() / cfg.run.cache_dir, _experiment_group(cfg), False, options)
        task(cfg, ctx)
        return

    import hydra
    from hydra.core.hydra_config import HydraConfig

    root = find_repo_root()

    @hydra.main(config_path=str(root / "conf"), config_name="config", version_base="1.3")
    def _main(raw: DictConfig) -> None:
        cfg = validate(raw)
        _set_threads(cfg)
        hc = HydraConfig.get()
        multirun = hc.mode is not None and hc.mode.name == "MULTIRUN"
        group = _experiment_group(cfg)
        tags: tuple[tuple[str, str], ...] = ()
        if multirun:
            if not cfg.wandb.group:
                group = sweep_group(group, argv, hc.sweep.dir)
            tags = job_tags(argv, list(hc.overrides.task))
        out_root = Path(hc.runtime.output_dir)
        task(cfg, StageContext(out_root, root / cfg.run.cache_dir, group, sweep=True, job_tags=tags))

    _main()
