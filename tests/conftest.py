"""Shared test fixtures: offline settings, the shared real-data folder, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real offline data folder (../shared/data); tests using it skip where it is absent."""
    if not (SHARED_DATA / "MANIFEST.md").is_file():
        pytest.skip(f"shared data not present at {SHARED_DATA}")
    return SHARED_DATA


HEAVY_IMPORTS = ("torch", "transformers", "lightning")


@pytest.fixture(scope="session")
def run_without_torch():
    """Run Python code in a fresh process where torch, transformers and lightning cannot be imported.

    ``run_without_torch(code, cwd)`` sets ``sys.modules[name] = None`` for each of :data:`HEAVY_IMPORTS`
    before ``code`` runs (an import of one then raises ``ImportError``) and returns the completed process.
    ``run_without_torch.module(name, *args, cwd=...)`` runs ``python -m name args`` the same way.
    """
    import subprocess
    import sys

    def run(code: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
        block = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in HEAVY_IMPORTS)
        return subprocess.run([sys.executable, "-c", block + code], cwd=cwd, capture_output=True, text=True)

    def module(name: str, *args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
        return run(f"import runpy\nsys.argv = [{name!r}, *{list(args)!r}]\n"
                   f"runpy.run_module({name!r}, run_name='__main__', alter_sys=True)\n", cwd)

    run.module = module
    return run


@pytest.fixture(scope="session")
def make_tiny_llama():
    """Factory for the tests' tiny random Llama (hidden 64, 2 layers, 4 heads, 2 KV heads), seeded."""

    def build(vocab_size: int, max_positions: int):
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=max_positions)
        return LlamaForCausalLM(config)

    return build


@pytest.fixture(scope="session")
def make_wordpiece_dir(tmp_path_factory):
    """Factory writing a BERT WordPiece tokenizer folder whose vocabulary is the given words."""

    def build(words: list[str]) -> Path:
        from transformers import BertTokenizerFast

        folder = tmp_path_factory.mktemp("tok")
        (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
        # transformers 5 reads the vocabulary from `vocab=`; `vocab_file=` is ignored (every word becomes [UNK])
        tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"))
        assert tokenizer.convert_tokens_to_ids(words[0]) == 5, "the tokenizer did not load its vocabulary"
        tokenizer.save_pretrained(str(folder))
        return folder

    return build


@pytest.fixture(scope="session")
def make_sentences():
    """Factory of seeded random sentences (2–8 words each) over a 21-word vocabulary.

    ``make_sentences(count, seed)`` gives the same sentences for the same arguments;
    ``make_sentences.words`` is the vocabulary, for a tokenizer from ``make_wordpiece_dir``.
    """
    words = "the a cat dog sat on mat ran quickly slowly big small red blue house tree over under park man woman".split()

    def build(count: int, seed: int = 0) -> list[str]:
        import torch

        gen = torch.Generator().manual_seed(seed)
        out = []
        for _ in range(count):
            length = int(torch.randint(2, 9, (1,), generator=gen))
            out.append(" ".join(words[int(i)] for i in torch.randint(0, len(words), (length,), generator=gen)))
        return out

    build.words = words
    return build


class FakeWandbServer:
    """A local TCP server standing in for a W&B server that misbehaves in one way (``kind``).

    * ``silent``: accepts connections, reads the request, never answers;
    * ``garbage``: answers every request with bytes that are not HTTP, then closes;
    * ``http-garbage``: answers every request with ``200 OK`` and a body that is not W&B's JSON;
    * ``probe-only``: answers ``GET`` with ``200 OK`` and never answers anything else (W&B's ``POST /graphql``);
    * ``http``: answers every request with ``200 OK`` (a reachable server).
    """

    KINDS = ("silent", "garbage", "http-garbage", "probe-only", "http")

    def __init__(self, kind: str) -> None:
        import socket
        import threading

        if kind not in self.KINDS:
            raise ValueError(f"unknown server kind {kind!r}; valid: {self.KINDS}")
        self.kind, self.requests, self._held, self._stop = kind, [], [], threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import threading

        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        conn.settimeout(30)
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                head += chunk
            method = head.split(b" ", 1)[0].decode(errors="replace")
            self.requests.append(method)
            if self.kind == "silent" or (self.kind == "probe-only" and method != "GET"):
                self._held.append(conn)  # keep it open, unanswered, until close()
                return
            if self.kind == "garbage":
                conn.sendall(b"\x00\x17 not a protocol anyone speaks \xff\r\n")
            else:
                body = b"<html>no graphql here</html>" if self.kind == "http-garbage" else b"{}"
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        conn.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()


@pytest.fixture
def fake_wandb_server():
    """Factory of :class:`FakeWandbServer` (``fake_wandb_server("silent").url``), closed after the test."""
    servers: list[FakeWandbServer] = []

    def start(kind: str) -> FakeWandbServer:
        servers.append(FakeWandbServer(kind))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
