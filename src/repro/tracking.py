"""Experiment tracking: W&B runs (offline when no account is configured), run names, metrics files.

Conventions (shared by every stage):
    * one W&B project per paper: ``<prefix>-longlora`` / ``<prefix>-simcse``;
    * the group is the experiment or sweep, the job_type is the pipeline stage;
    * metric keys use slashes (``train/loss``, ``eval/ppl@8192``);
    * the flat JSON written by :func:`write_metrics` is what DVC tracks and holds the authoritative
      final numbers; W&B mirrors them for browsing.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import re
import struct
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("repro")


def wandb_mode() -> str:
    """The W&B mode to use: ``WANDB_MODE`` if set, ``online`` with credentials, else ``offline``.

    Offline runs never prompt or hang; upload them later with ``wandb sync wandb/offline-run-*``.
    """
    explicit = os.environ.get("WANDB_MODE")
    if explicit:
        return explicit
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1].split("/")[0]
        if netrc.netrc().authenticators(host):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", str(text)).strip("-")


def make_run_name(paper: str, job_type: str, profile: str, tags: Mapping[str, Any] | None = None) -> str:
    """The one place run names are made: ``<paper>-<stage>-<profile>[-k=v...]``.

    Example: ``longlora-train-tiny-attn=s2-adapter=lora_plus-ctx=512``.
    """
    parts = [paper, job_type, profile]
    parts += [f"{k}={v}" for k, v in (tags or {}).items() if v is not None and v != ""]
    return _slug("-".join(str(p) for p in parts))


def project_name(cfg: DictConfig, paper: str) -> str:
    """W&B project for a paper, e.g. ``repro-longlora``."""
    return f"{cfg.wandb.project_prefix}-{paper}"


def _unreachable_because(base_url: str, timeout_s: float) -> str | None:
    """Why the W&B server does not answer an HTTP request within ``timeout_s`` seconds; ``None`` when it does.

    A TCP connect alone is not enough: a server (or a proxy, a half-open tunnel) that accepts the connection
    and never answers would pass it, and ``wandb.init`` would then wait for its own 90 s. Any HTTP status line
    counts as an answer; the socket timeout bounds the connect and the wait for the reply.
    """
    import http.client
    from urllib.parse import urlparse

    url = urlparse(base_url if "//" in base_url else f"https://{base_url}")
    kind = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    conn = kind(url.hostname or "", url.port, timeout=timeout_s)
    try:
        conn.request("GET", url.path or "/")
        conn.getresponse()
        return None
    except TimeoutError:
        return "no answer"
    except (OSError, http.client.HTTPException) as exc:
        return _first_line(exc)
    finally:
        conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _go_offline(base: str, timeout_s: float, reason: str) -> None:
    """One warning line; and W&B's own SDK error reports (sent to the same server at exit, with a 10 s timeout)
    are turned off for this process, unless ``WANDB_ERROR_REPORTING`` says otherwise."""
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    log.warning("W&B server %s unreachable within %g s (%s): logging offline (upload later with `wandb sync`)",
                base, timeout_s, reason)


def resolve_mode(timeout_s: float = 5.0) -> str:
    """:func:`wandb_mode`, falling back to ``offline`` when ``online`` but the server does not answer.

    W&B's own ``init_timeout`` is 90 s, after which the stage fails without writing anything. Here an HTTP
    request to ``WANDB_BASE_URL`` decides within ``timeout_s`` (``wandb.init_timeout_s``) and one warning
    line says that the run is kept offline for a later ``wandb sync``.
    """
    mode = wandb_mode()
    if mode != "online":
        return mode
    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    reason = _unreachable_because(base, timeout_s)
    if reason is None:
        return "online"
    _go_offline(base, timeout_s, reason)
    return "offline"


def init_run(
    cfg: DictConfig,
    paper: str,
    job_type: str,
    name: str,
    group: str,
    save_dir: str | Path | None = None,
    run_id: str | None = None,
):
    """Start a W&B run with the composed config attached.

    Args:
        cfg: the composed (validated) config; logged whole as the run config.
        paper: ``longlora`` or ``simcse``: selects the project.
        job_type: the pipeline stage (``train``, ``evaluate``...).
        name: from :func:`make_run_name`.
        group: experiment or sweep name.
        save_dir: where the ``wandb/`` folder goes (default: ``cfg.wandb.dir``).
        run_id: a stable id (:func:`repro.resume.resumable_run_id`); with it the run is resumed when it
            already exists.

    Only the global rank zero logs: on other ranks this returns a disabled run, so an 8-GPU job
    makes one W&B run, not eight. Online, ``wandb.init_timeout_s`` bounds both the reachability probe
    (:func:`resolve_mode`) and ``wandb.init`` itself (W&B's ``init_timeout``): a server that answers the
    probe but not the run's requests, or answers them with an error, also leaves the run offline, with
    the same one warning line.
    """
    import wandb

    timeout_s = float(cfg.wandb.get("init_timeout_s", 5.0))
    mode = resolve_mode(timeout_s)
    if not is_global_zero():
        mode = "disabled"
    save_dir = Path(save_dir or cfg.wandb.dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")

    def start(mode: str):
        return wandb.init(
            project=project_name(cfg, paper),
            entity=cfg.wandb.entity or None,
            group=group,
            job_type=job_type,
            name=name,
            id=run_id,
            resume="allow" if run_id else None,
            config=OmegaConf.to_container(cfg, resolve=True),
            dir=str(save_dir),
            mode=mode,
            tags=[str(cfg.run.profile), paper, job_type],
            reinit="finish_previous",
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True, init_timeout=timeout_s),
        )

    if mode != "online":
        return start(mode)
    try:
        return start("online")
    except (wandb.Error, TimeoutError) as exc:  # CommError on init_timeout, Error on a reply that is not W&B's
        _go_offline(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"), timeout_s, _first_line(exc))
        wandb.teardown()  # the service still holds the failed run's id ("run ID ... is in use")
        return start("offline")


def is_global_zero() -> bool:
    """Whether this process is the global rank zero (or not distributed at all).

    Reads the launcher's environment (``RANK``, set by torchrun, Lightning and SLURM launches), so it
    answers before a process group exists.
    """
    if os.environ.get("RANK", "") != "":
        return int(os.environ["RANK"]) == 0
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank() == 0
    except ImportError:  # pragma: no cover
        pass
    if os.environ.get("SLURM_PROCID", "") != "" and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return int(os.environ["SLURM_PROCID"]) == 0
    if os.environ.get("LOCAL_RANK", "") != "":  # Lightning's launcher sets these for ranks > 0
        return int(os.environ["LOCAL_RANK"]) == 0 and int(os.environ.get("NODE_RANK", "0") or 0) == 0
    return True


def write_metrics(path: str | Path, metrics: Mapping[str, Any]) -> None:
    """Write a flat metrics JSON atomically (what DVC's ``metrics:`` tracks); global rank zero only."""
    if not is_global_zero():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(dict(metrics), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_csv(path: str | Path, rows: list[Mapping[str, Any]]) -> None:
    """Write rows (same keys) as CSV for ``dvc plots``; atomic; global rank zero only."""
    import csv

    if not is_global_zero():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


# --- reading offline runs back (tests, reports) -------------------------------------------------

_BLOCK = 32768
_HEADER = 7


def _records(path: Path) -> Iterator[Any]:
    """Yield the protobuf records of a ``run-<id>.wandb`` file (a LevelDB-style log).

    Layout: a 7-byte file header (``:W&B``, magic 0xBEE1, version), then 32 KiB blocks of records, each
    with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last). A record torn by a
    writer that has not flushed yet (its length runs past the end of the file) ends the stream.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    if len(data) < _HEADER:
        return
    ident, magic, _version = struct.unpack("<4sHB", data[:_HEADER])
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError(f"{path} is not a W&B run file")
    pos, buf = _HEADER, b""
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0 and length == 0:
            break
        if pos + _HEADER + length > len(data):  # torn tail: not written yet
            break
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record


def _items(items) -> dict[str, Any]:
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def read_offline_run(run_dir: str | Path, wait_s: float = 30.0) -> dict[str, Any]:
    """Read an offline run folder back: ``{"config", "history", "summary", "run", "complete", "exit_code"}``.

    ``run`` holds project, group, job_type and name as recorded. W&B's writer process may still be
    flushing the file after ``run.finish()`` returns (more so on a loaded machine), so this re-reads the
    file until it holds the run's ``exit`` record, for at most ``wait_s`` seconds; ``complete`` says
    whether it did (a crashed run never writes one), and ``exit_code`` is that record's exit code (non-zero
    for a run finished as failed, ``None`` without an exit record). A resumed run writes one file per
    attempt: all are read, in order.
    """
    run_dir = Path(run_dir)
    files = sorted(run_dir.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    deadline = time.monotonic() + wait_s
    while True:
        records = [r for f in files for r in _records(f)]
        complete = any(r.WhichOneof("record_type") == "exit" for r in records)
        if complete or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    history, config, summary, run, exit_code = [], {}, {}, {}, None
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "exit":
            exit_code = int(record.exit.exit_code)
        elif kind == "history":
            history.append(_items(record.history.item))
        elif kind == "run":
            config.update(_items(record.run.config.update))
            run = {
                "project": record.run.project,
                "group": record.run.run_group,
                "job_type": record.run.job_type,
                "name": record.run.display_name,
                "run_id": record.run.run_id,
            }
        elif kind == "config":
            config.update(_items(record.config.update))
        elif kind == "summary":
            summary.update(_items(record.summary.update))
    return {"config": config, "history": history, "summary": summary, "run": run, "complete": complete,
            "exit_code": exit_code}


def find_offline_runs(wandb_dir: str | Path) -> list[Path]:
    """All offline run folders under a ``wandb/`` directory, oldest first."""
    return sorted(Path(wandb_dir).glob("offline-run-*"))


def record_run(run, path: str | Path) -> dict[str, Any]:
    """Save where a W&B run lives (project, group, name, id, URL or offline folder) for report links."""
    info = {
        "project": run.project,
        "group": run.group,
        "name": run.name,
        "id": run.id,
        "url": run.url if not run.offline else None,
        "offline_dir": str(Path(run.dir).parent) if run.offline else None,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def run_link(info: Mapping[str, Any] | None) -> str:
    """Markdown link to a recorded run: its URL online, else the offline folder to ``wandb sync``."""
    if not info:
        return "—"
    if info.get("url"):
        return f"[{info['name']}]({info['url']})"
    return f"`{info['name']}` (offline `{info.get('id')}`; upload with `wandb sync`)"
