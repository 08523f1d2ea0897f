"""Compose ``conf/`` into ``params.yaml`` exactly as DVC's Hydra integration does.

    python -m repro.compose                         # rewrite params.yaml from conf/ (default profile)
    python -m repro.compose profile=mini -o params.mini.yaml

``dvc exp run -S ...`` does the same composition itself; plain ``dvc repro`` reads params.yaml as it
stands, so after editing ``conf/`` run this (a test checks that params.yaml is in sync).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from repro.cli import REPO_ROOT


def compose_params(output: Path, overrides: list[str], conf_dir: Path = REPO_ROOT / "conf") -> Path:
    """Write the composed config to ``output`` with DVC's own composer (same file DVC would write)."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(output, str(conf_dir.resolve()), None, "config", str(REPO_ROOT / ".dvc" / "plugins"), overrides)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. profile=mini model=smollm2")
    parser.add_argument("-o", "--output", type=Path, default=REPO_ROOT / "params.yaml")
    args = parser.parse_args()
    print(compose_params(args.output, args.overrides))


if __name__ == "__main__":
    main()
