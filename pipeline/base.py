"""Stage longlora_base: materialise the base model (the tiny profile pretrains it at its original context).

    python -m pipeline.base --params params.yaml
"""

from repro.cli import run_stage

if __name__ == "__main__":
    run_stage("repro.workflows.longlora:build_base")
