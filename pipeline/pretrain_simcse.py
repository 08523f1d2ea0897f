"""Stage simcse_pretrain: MLM pretraining of the tiny encoder, then the encoder scored before SimCSE.

    python -m pipeline.pretrain_simcse --params params.yaml

A package / hub encoder (mini, paper) is pretrained already and is only scored (Table 5's BERT rows).
"""

from repro.cli import run_stage

if __name__ == "__main__":
    run_stage("repro.workflows.simcse:pretrain")
