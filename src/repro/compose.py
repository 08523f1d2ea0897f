"""Compose ``conf/`` into ``params.yaml`` exactly as DVC's Hydra integration does.

    python -m repro.compose                         # rewrite params.yaml from conf/ (default profile)
    python -m repro.compose profile=mini -o params.mini.yaml

``dvc exp run -S ...`` does the same composition itself; plain ``dvc repro`` reads params.yaml as it
stands, so after editing ``conf/`` run this (a test checks that params.yaml is in sync).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from repro.cli import find_repo_root


def compose_params(output: Path, overrides: list[str], conf_dir: Path | None = None) -> Path:
    """Write the composed config to ``output`` with DVC's own composer (same file DVC would write).

    ``conf_dir`` defaults to ``conf/`` of the checkout the working directory is in.
    """
    from dvc.utils.hydra import compose_and_dump

    root = find_repo_root()
    conf_dir = conf_dir or root / "conf"
    compose_and_dump(output, str(conf_dir.resolve()), None, "config", str(root / ".dvc" / "plugins"), overrides)
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. profile=mini model=smollm2")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="output file (default: params.yaml of the checkout the working directory is in)")
    args = parser.parse_args()
    print(compose_params(args.output or find_repo_root() / "params.yaml", args.overrides))


if __name__ == "__main__":
    main()
