"""Stage simcse_train@<run>: contrastive training of one run of ``simcse.runs`` (SimCSE §3–4).

    python -m pipeline.train_simcse --params params.yaml --run unsup     # as DVC runs it
    python -m pipeline.train_simcse -m simcse.run=unsup simcse.train.temperature=0.01,0.05,0.1

Under Hydra each job reuses (or builds) the cached data, trains, and evaluates into its own folder.
"""

from omegaconf import DictConfig

from repro.cli import StageContext, run_stage


def main(cfg: DictConfig, ctx: StageContext) -> None:
    from repro.workflows import simcse

    run = ctx.option("run", cfg.simcse.run)
    if cfg.run.dry_run:  # python -m pipeline.train_simcse run.dry_run=true profile=paper simcse.run=sup
        from repro.dryrun import print_plan, simcse_plan

        print_plan(simcse_plan(cfg, run))
        return
    if ctx.sweep:
        simcse.prepare(cfg, ctx)
    metrics = simcse.train(cfg, ctx, run)
    if ctx.sweep and metrics:  # only global rank zero gets metrics back under DDP
        simcse.evaluate(cfg, ctx, run)


if __name__ == "__main__":
    run_stage(main)
