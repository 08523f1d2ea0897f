"""Stage longlora_train: fine-tune with Position Interpolation, S2-Attn and LoRA+ (LongLoRA §3).

    python -m pipeline.train --params params.yaml                    # as DVC runs it
    python -m pipeline.train -m attention=full,s2 adapter=lora_plus   # Hydra sweep: one W&B run per job
    python -m pipeline.train run.dry_run=true profile=paper           # shapes, batch layout, memory; no weights

Under Hydra each job first reuses (or builds) the cached data and base model, then trains and
evaluates into its own output folder.
"""

from omegaconf import DictConfig

from repro.cli import StageContext, run_stage


def main(cfg: DictConfig, ctx: StageContext) -> None:
    if cfg.run.dry_run:  # python -m pipeline.train run.dry_run=true profile=paper
        from repro.dryrun import longlora_plan, print_plan

        print_plan(longlora_plan(cfg))
        return
    from repro.workflows import longlora, longlora_eval

    if ctx.sweep:
        longlora.prepare(cfg, ctx)
        longlora.build_base(cfg, ctx)
    longlora.train(cfg, ctx)
    if ctx.sweep:
        longlora_eval.evaluate(cfg, ctx)


if __name__ == "__main__":
    run_stage(main)
