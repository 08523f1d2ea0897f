"""Stage ablate_<name>@<variant>: train and evaluate one ablation variant (conf/ablations/default.yaml).

    python -m pipeline.ablate --params params.yaml --ablation simcse_dropout --variant p0_1   # as DVC runs it
    python -m pipeline.ablate --sweep simcse_dropout          # Hydra multirun over every variant
    python -m pipeline.ablate -m ablations.name=simcse_dropout ablations.variant=p0,p0_1   # some of them

In a sweep each variant is its own W&B run in the group ``ablation-<name>``; a failed variant is
recorded as failed and the sweep goes on.
"""

import subprocess
import sys

from omegaconf import DictConfig

from repro.cli import REPO_ROOT, StageContext, run_stage


def main(cfg: DictConfig, ctx: StageContext) -> None:
    from repro.workflows.ablations import run_variant

    ablation = ctx.option("ablation", cfg.ablations.name)
    variant = ctx.option("variant", cfg.ablations.variant)
    if not ablation or not variant:
        raise SystemExit("name the ablation and variant: --ablation/--variant (DVC) or ablations.name/variant=")
    run_variant(cfg, ctx, ablation, variant)


def sweep(ablation: str, extra: list[str]) -> int:
    """Launch the Hydra multirun over every variant of ``ablation`` (names read from the config)."""
    from hydra import compose, initialize_config_dir

    from repro.workflows.ablations import variant_names

    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=extra)
    names = ",".join(variant_names(cfg, ablation))
    cmd = [sys.executable, "-m", "pipeline.ablate", "-m", f"ablations.name={ablation}", f"ablations.variant={names}", *extra]
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=REPO_ROOT)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--sweep":
        sys.exit(sweep(sys.argv[2], sys.argv[3:]))
    run_stage(main)
