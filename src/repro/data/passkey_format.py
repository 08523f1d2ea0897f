"""The passkey-retrieval prompt format (Mohtashami & Jaggi, 2023), as used by LongLoRA §4.2.

A task description, a block of repeated filler sentences with one information line inserted at a
random position, and a final question. The model must complete the question with the key.
Shared by the passkey evaluator and the synthetic training corpus, so both speak the same text.
"""

from __future__ import annotations

TASK_DESCRIPTION = (
    "There is an important info hidden inside a lot of irrelevant text. "
    "Find it and memorize them. I will quiz you about the important information there."
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
QUESTION = "What is the pass key? The pass key is"


def information_line(passkey: str) -> str:
    """The sentence that carries the key."""
    return f"The pass key is {passkey}. Remember it. {passkey} is the pass key."


def build_passkey_prompt(passkey: str, n_filler: int, insert_at: int) -> str:
    """Join description, ``insert_at`` fillers, the key line, the remaining fillers and the question.

    Args:
        passkey: the key as a string of digits.
        n_filler: total number of filler repetitions.
        insert_at: how many fillers come before the information line (0..n_filler).
    """
    if not 0 <= insert_at <= n_filler:
        raise ValueError(f"insert_at={insert_at} must lie in [0, n_filler={n_filler}]")
    before = " ".join([FILLER] * insert_at)
    after = " ".join([FILLER] * (n_filler - insert_at))
    parts = [TASK_DESCRIPTION, before, information_line(passkey), after, QUESTION]
    return " ".join(p for p in parts if p)
