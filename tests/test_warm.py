"""Warm start: a stage process hands its run to a server that already has the imports, or runs itself."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGE = '''import os, sys
from repro.cli import _warm_delegate
_warm_delegate()
print("pid", os.getpid(), "cwd", os.getcwd(), "argv", sys.argv[1:], "X", os.environ.get("X"), flush=True)
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("CODE", "0")))
'''


@pytest.fixture()
def warm(tmp_path):
    """A warm server (importing only json) and an environment whose stage processes use it."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "fakestage.py").write_text(STAGE)
    sock = tmp_path / "s.sock"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "pkg"), str(ROOT / "src")])}
    server = subprocess.Popen([sys.executable, "-m", "repro.warm", "serve", "--socket", str(sock), "--ready-line",
                               "--preload", "json"], stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    assert server.stdout.readline().strip() == "ready"
    yield {**env, "REPRO_WARM_SOCKET": str(sock)}, tmp_path, server.pid
    server.terminate()
    server.wait(timeout=10)


def _stage(env, cwd, **extra):
    proc = subprocess.Popen([sys.executable, "-m", "fakestage", "--params", "p.yaml"], cwd=cwd,
                            env={**env, **extra}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    return proc.pid, proc.returncode, out, err


def test_stage_runs_in_a_forked_child_with_its_own_cwd_env_args_and_streams(warm):
    env, cwd, server_pid = warm
    pid, code, out, err = _stage(env, cwd, X="42", CODE="3")
    fields = out.split()
    child = int(fields[1])
    assert child not in (pid, server_pid)  # neither the stage process nor the server ran it
    assert fields[3] == str(cwd) and "'--params', 'p.yaml'" in out and fields[-1] == "42"
    assert "to stderr" in err and code == 3


def test_stage_runs_itself_when_an_import_time_variable_differs(warm):
    env, cwd, _ = warm
    pid, code, out, err = _stage(env, cwd, OMP_NUM_THREADS="7")
    assert int(out.split()[1]) == pid and code == 0
    assert "environment differs" in err


def test_stage_runs_itself_without_a_server(tmp_path, warm):
    env, cwd, _ = warm
    pid, code, out, err = _stage(env, cwd, REPRO_WARM_SOCKET=str(tmp_path / "none.sock"))
    assert int(out.split()[1]) == pid and code == 0 and "no warm start" in err


def test_stage_in_another_checkout_runs_itself(warm, tmp_path):
    env, _, _ = warm
    other = tmp_path / "other"
    (other / "conf").mkdir(parents=True)
    (other / "dvc.yaml").write_text("stages: {}\n")
    pid, code, out, err = _stage(env, other)
    assert int(out.split()[1]) == pid and "another checkout" in err


def test_signal_to_the_stage_process_reaches_the_child(warm, tmp_path):
    env, cwd, _ = warm
    (tmp_path / "pkg" / "slowstage.py").write_text(STAGE.replace("sys.exit(", "import time; time.sleep(30); sys.exit("))
    proc = subprocess.Popen([sys.executable, "-m", "slowstage"], cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline().split()[1])
    proc.terminate()
    assert proc.wait(timeout=20) != 0
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
