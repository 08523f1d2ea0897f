"""Stage simcse_evaluate@<run>: STS12–16, STS-B, SICK-R (Spearman ×100) and alignment/uniformity.

    python -m pipeline.evaluate_simcse --params params.yaml --run sup
"""

from omegaconf import DictConfig

from repro.cli import StageContext, run_stage


def main(cfg: DictConfig, ctx: StageContext) -> None:
    from repro.workflows import simcse

    simcse.evaluate(cfg, ctx, ctx.option("run", cfg.simcse.run))


if __name__ == "__main__":
    run_stage(main)
