"""Stage longlora_prepare: tokenise + pack the training corpus, write evaluation token streams.

    python -m pipeline.prepare_lm --params params.yaml     # as DVC runs it
    python -m pipeline.prepare_lm data=local               # composed by Hydra
"""

from repro.cli import run_stage

if __name__ == "__main__":
    run_stage("repro.workflows.longlora:prepare")
