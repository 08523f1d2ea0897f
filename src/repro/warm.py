"""A warm start for stage processes: import torch, transformers and lightning once per ``dvc repro``.

    python -m repro.warm run -- dvc repro       # what `make repro` does
    python -m repro.warm serve --socket PATH    # the server alone (until killed)

Every stage is its own process (``python -m pipeline.<stage> ...``), and each pays 4–7 s of
start-up, mostly imports, before its task begins; the default pipeline has about fifty stages.
``run`` starts a server that imports the heavy modules once, sets ``REPRO_WARM_SOCKET`` for the
command it runs, and stops the server when the command ends. A stage process started under it
(:func:`repro.cli.run_stage`) sends its module, arguments, working directory, environment and its
stdin/stdout/stderr file descriptors to the server; the server forks a child that already has the
imports and runs the stage there, writing straight to the stage's own output, and the stage
process exits with the child's status. DVC sees an ordinary command.

The stage runs in the stage process itself (as without the server) whenever the server cannot be
reached, the environment differs from the server's in a variable read at import time
(``HF_*``, ``TRANSFORMERS_*``, ``OMP_NUM_THREADS``, ...), a file under ``src/repro`` changed
since the server started, or the stage runs in another checkout than the server. A signal to the stage
process (Ctrl-C, DVC stopping) is passed on to the child.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import traceback
from contextlib import contextmanager
from pathlib import Path

ENV_VAR = "REPRO_WARM_SOCKET"
PRELOAD = (
    "torch", "transformers", "lightning", "lightning.pytorch.loggers", "repro.config", "repro.workflows.longlora",
    "repro.workflows.longlora_eval", "repro.workflows.simcse", "repro.workflows.ablations", "repro.lit.causal_lm",
    "repro.lit.simcse", "repro.lit.history", "repro.reporting", "repro.reports.longlora", "repro.reports.simcse",
    "repro.reports.ablations",
)
# Environment variables that libraries read when they are imported: a stage with other values than
# the server's runs in its own process.
_IMPORT_TIME_ENV = ("HF_", "TRANSFORMERS_", "HUGGINGFACE_", "TORCH", "OMP_", "MKL_", "CUDA_", "PYTORCH_",
                    "TOKENIZERS_", "PYTHONHASHSEED", "PYTHONPATH")
_HEADER = struct.Struct("!Q")


def _import_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_IMPORT_TIME_ENV) and k != ENV_VAR}


def _code_state() -> dict[str, float]:
    """mtime and size of every source file of the package (what the server imported)."""
    root = Path(__file__).resolve().parent
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*.py"))}


# --- server ---------------------------------------------------------------------------------------


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    if len(data) < _HEADER.size:
        raise ConnectionError("short request")
    (size,) = _HEADER.unpack(data[:_HEADER.size])
    body = data[_HEADER.size:]
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ConnectionError("request cut short")
        body += chunk
    return json.loads(body), list(fds)


def _reply(conn: socket.socket, obj: dict) -> None:
    conn.sendall(json.dumps(obj).encode() + b"\n")


def _run_child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the stage process, run the stage, report its exit status. Never returns."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.pop(ENV_VAR, None)  # the child runs the stage itself
        sys.argv = list(request["argv"])
        _reply(conn, {"pid": os.getpid()})
        try:
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 - the stage's traceback, as the stage process would print it
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            _reply(conn, {"exit": int(code)})
        finally:
            os._exit(int(code) if isinstance(code, int) else 1)


def serve(path: str | Path, preload: tuple[str, ...] = PRELOAD, ready=None) -> None:
    """Import ``preload``, then serve stage requests on the Unix socket ``path`` until killed."""
    env = _import_env(dict(os.environ))  # before the imports, which may set some (e.g. TOKENIZERS_*)
    for module in preload:
        importlib.import_module(module)
    code = _code_state()
    from repro.paths import find_repo_root

    root = find_repo_root()  # what module-level REPO_ROOT values in the preloaded modules hold
    signal.signal(signal.SIGCHLD, lambda *_: _reap())
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    if ready:
        ready()
    while True:
        conn, _ = server.accept()
        try:
            request, fds = _recv_request(conn)
        except (OSError, ValueError) as exc:
            conn.close()
            print(f"repro.warm: bad request: {exc}", file=sys.stderr)
            continue
        reason = None
        theirs = _import_env(request["env"])
        if theirs != env:
            keys = sorted(k for k in set(theirs) | set(env) if theirs.get(k) != env.get(k))
            reason = f"environment differs from the warm server's in {', '.join(keys)}"
        elif _code_state() != code:
            reason = "src/repro changed since the warm server started"
        elif find_repo_root(Path(request["cwd"])) != root:
            reason = f"the stage runs in another checkout than the warm server's ({root})"
        if reason:
            _reply(conn, {"fallback": reason})
        else:
            pid = os.fork()
            if pid == 0:
                server.close()
                _run_child(conn, request, fds)
        for fd in fds:
            os.close(fd)
        conn.close()


def _reap() -> None:
    """Collect finished children (their status went to their stage process already)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


# --- client ---------------------------------------------------------------------------------------


def delegate(module: str, argv: list[str]) -> int | None:
    """Run ``python -m module`` with ``argv`` in the warm server; its exit status, or None to run here.

    None when ``REPRO_WARM_SOCKET`` is unset, the server does not answer, or it declines (the reason
    is printed on stderr).
    """
    path = os.environ.get(ENV_VAR)
    if not path:
        return None
    payload = json.dumps({"module": module, "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        socket.send_fds(conn, [_HEADER.pack(len(payload)) + payload], [0, 1, 2])
        replies = conn.makefile("rb")
        first = json.loads(replies.readline() or b"{}")
    except (OSError, ValueError) as exc:
        print(f"repro.warm: no warm start ({exc}); running in this process", file=sys.stderr)
        return None
    if "pid" not in first:
        print(f"repro.warm: no warm start ({first.get('fallback', 'no answer')}); running in this process",
              file=sys.stderr)
        return None
    pid = int(first["pid"])

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            line = replies.readline()
            break
        except InterruptedError:
            continue
    if not line:  # the child died without reporting (killed)
        return 1
    return int(json.loads(line).get("exit", 1))


@contextmanager
def warm_server(cwd: str | Path | None = None, env: dict[str, str] | None = None):
    """Start a server for stages run in ``cwd`` (default: here); yield the environment that hands stages to it.

    The server runs with ``env`` (default: this process's); without a server (it did not start) the
    yielded environment is ``env`` itself and stages start their own processes. Stopped on exit.
    """
    env = dict(os.environ if env is None else env)
    folder = tempfile.mkdtemp(prefix="repro-warm-")
    path = os.path.join(folder, "sock")
    server = subprocess.Popen([sys.executable, "-m", "repro.warm", "serve", "--socket", path, "--ready-line"],
                              cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    try:
        if server.stdout.readline().strip() != "ready":
            print("repro.warm: the warm server did not start; stages start their own processes", file=sys.stderr)
            yield env
        else:
            yield {**env, ENV_VAR: path}
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)


def run_warm(command: list[str]) -> int:
    """Run ``command`` with a warm server for its stage processes; stop the server afterwards."""
    with warm_server() as env:
        return subprocess.call(command, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_serve = sub.add_parser("serve", help="serve stage requests on a Unix socket")
    p_serve.add_argument("--socket", required=True)
    p_serve.add_argument("--ready-line", action="store_true", help="print 'ready' once listening")
    p_serve.add_argument("--preload", default=",".join(PRELOAD), help="comma-separated modules to import first")
    p_run = sub.add_parser("run", help="run a command (e.g. dvc repro) with a warm server")
    p_run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        preload = tuple(m for m in args.preload.split(",") if m)
        serve(args.socket, preload, ready=(lambda: print("ready", flush=True)) if args.ready_line else None)
        return 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("run needs a command, e.g. `python -m repro.warm run -- dvc repro`")
    return run_warm(command)


if __name__ == "__main__":
    sys.exit(main())
