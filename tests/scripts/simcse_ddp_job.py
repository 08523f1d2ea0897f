"""One SimCSE training stage (``repro.workflows.simcse.train``) on CPU, for the DDP tests.

    python tests/scripts/simcse_ddp_job.py OUT_DIR ASSETS_DIR RUN DEVICES

Runs in OUT_DIR (models, metrics, plots and wandb/ land there). ASSETS_DIR, shared by the runs that
are compared, holds the prepared tiny synthetic data (its WordPiece vocabulary is not reproducible
across preparations) and a tiny BERT saved *with its pooler* in the hub layout. Trains RUN (unsup or sup) with
dropout 0 (so per-rank dropout streams cannot differ from one process's) on DEVICES CPU processes
(strategy ddp, gloo) or one. Lightning's ddp launcher re-runs this script for rank 1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]


def main(out: Path, assets: Path, run: str, devices: int) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from repro.cli import StageContext
    from repro.config import validate
    from repro.workflows import simcse

    os.chdir(out)
    raw = OmegaConf.load(REPO / "params.yaml")
    # the small synthetic sentence set (sentence_data=synthetic): the DDP split, not the data, is under test
    raw.simcse.data = OmegaConf.load(REPO / "conf" / "sentence_data" / "synthetic.yaml")
    tok_dir = assets / "data" / "simcse" / "tokenizer"
    bert_dir = assets / "bert-with-pooler"
    overrides = {
        "run": {"data_dir": str(assets / "data"), "devices": devices, "accelerator": "cpu",
                "strategy": "ddp" if devices > 1 else "auto",
                "num_threads": 1},
        "simcse": {
            "data": {"n_sentences": 256, "n_triplets": 256, "n_sts_pairs": 40},
            "encoder": {"source": "hub", "name_or_path": str(bert_dir), "dropout": 0.0},
            "train": {"max_steps": 6, "eval_every_n_steps": 3, "batch_size": 16, "ckpt_every_n_steps": 0},
            "eval": {"align_uniform": False},
        },
    }
    cfg = validate(OmegaConf.merge(raw, overrides))
    ctx = StageContext(out, out / ".cache", "ddp-test", False)
    if os.environ.get("LOCAL_RANK", "0") == "0" and not bert_dir.is_dir():
        simcse.prepare(cfg, ctx)
        tok = AutoTokenizer.from_pretrained(str(tok_dir))
        torch.manual_seed(0)
        config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
        model = BertModel(config, add_pooling_layer=True)  # has a pooler, as hub BERT checkpoints do
        assert model.pooler is not None
        model.save_pretrained(str(bert_dir))
        tok.save_pretrained(str(bert_dir))
    simcse.train(cfg, ctx, run)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve(), sys.argv[3], int(sys.argv[4]))
