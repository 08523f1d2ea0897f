"""Stage simcse_transfer@<run>: SentEval transfer tasks (MR, CR, SUBJ, MPQA, SST-2, TREC, MRPC) on frozen embeddings.

    python -m pipeline.transfer_simcse --params params.yaml --run sup
"""

from omegaconf import DictConfig

from repro.cli import StageContext, run_stage


def main(cfg: DictConfig, ctx: StageContext) -> None:
    from repro.workflows import simcse

    simcse.transfer(cfg, ctx, ctx.option("run", cfg.simcse.run))


if __name__ == "__main__":
    run_stage(main)
