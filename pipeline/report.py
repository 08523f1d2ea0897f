"""Stage report: write reports/longlora.md and reports/simcse.md (+ PNG figures) from the metrics.

    python -m pipeline.report --params params.yaml
"""


from omegaconf import DictConfig

from repro.cli import StageContext, run_stage


def main(cfg: DictConfig, ctx: StageContext) -> None:
    from repro.reporting import write_page
    from repro.reports import ablations, longlora, simcse

    out = ctx.out_root / "reports"
    write_page(out / "longlora.md", longlora.build(cfg, ctx.out_root, out))
    write_page(out / "simcse.md", simcse.build(cfg, ctx.out_root, out))
    write_page(out / "ablations.md", ablations.build(cfg, ctx.out_root, out))


if __name__ == "__main__":
    run_stage(main)
