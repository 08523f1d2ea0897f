"""Stage longlora_evaluate: sliding-window perplexity and passkey retrieval with full attention.

    python -m pipeline.evaluate --params params.yaml
"""

from repro.cli import run_stage

if __name__ == "__main__":
    run_stage("repro.workflows.longlora_eval:evaluate")
