"""Stage simcse_prepare: training sentences / NLI triplets, the STS sets, the tiny tokenizer.

    python -m pipeline.prepare_sentences --params params.yaml
"""

from repro.cli import run_stage

if __name__ == "__main__":
    run_stage("repro.workflows.simcse:prepare")
