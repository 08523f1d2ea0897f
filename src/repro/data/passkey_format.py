"""The passkey-retrieval prompt exactly as LongLoRA's ``passkey_retrivial.py`` builds it (§4.2, Figure 4).

The format is Mohtashami & Jaggi's (2023) as LongLoRA's script writes it: five pieces joined by newlines,
the task description, a prefix of filler text, the information line, a suffix of filler text and the
final question. The filler is one garbage sentence repeated (5000 times, joined by spaces) and cut to a
number of *characters*, so it may end mid-word, as there. ``generate_prompt_landmark(n_garbage, seed)``
seeds NumPy's legacy generator with ``seed``, draws the prefix length ``randint(0, n_garbage)`` and then
the key ``randint(1, 50000)``; :func:`generate_passkey_prompt` draws the same two numbers from a private
``RandomState(seed)``, so the prompts are the reference's without touching global state. Shared by the
passkey evaluator and the synthetic training corpus, so both speak the same text.
"""

from __future__ import annotations

import numpy as np

TASK_DESCRIPTION = (
    "There is an important info hidden inside a lot of irrelevant text. "
    "Find it and memorize them. I will quiz you about the important information there."
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
QUESTION = "What is the pass key? The pass key is"
FILLER_REPEATS = 5000  # the reference's garbage_inf = " ".join([garbage] * 5000)


def garbage(n_chars: int) -> str:
    """The first ``n_chars`` characters of the filler repeated and joined by spaces.

    Raises:
        ValueError: if ``n_chars`` is negative or longer than the reference's 5000 repetitions.
    """
    limit = FILLER_REPEATS * (len(FILLER) + 1) - 1
    if not 0 <= n_chars <= limit:
        raise ValueError(f"filler length {n_chars} must lie in [0, {limit}] characters")
    reps = n_chars // (len(FILLER) + 1) + 1
    return " ".join([FILLER] * min(reps, FILLER_REPEATS))[:n_chars]


def information_line(passkey: str | int) -> str:
    """The sentence that carries the key."""
    return f"The pass key is {passkey}. Remember it. {passkey} is the pass key."


def build_passkey_prompt(passkey: str | int, n_prefix: int, n_suffix: int) -> str:
    """Description, ``n_prefix`` filler characters, the key line, ``n_suffix`` characters, the question.

    The five pieces are joined by ``"\\n"`` (empty filler pieces stay, as empty lines, as there).
    """
    return "\n".join([TASK_DESCRIPTION, garbage(n_prefix), information_line(passkey), garbage(n_suffix), QUESTION])


def generate_passkey_prompt(n_garbage: int, seed: int) -> tuple[str, str]:
    """The reference's ``generate_prompt_landmark(n_garbage, seed)``: ``(prompt, key as a string)``.

    Raises:
        ValueError: if ``n_garbage < 1`` (NumPy's ``randint(0, 0)`` has nothing to draw).
    """
    if n_garbage < 1:
        raise ValueError(f"n_garbage must be >= 1 character, got {n_garbage}")
    rng = np.random.RandomState(seed)
    n_prefix = int(rng.randint(0, n_garbage))
    passkey = int(rng.randint(1, 50000))
    return build_passkey_prompt(passkey, n_prefix, n_garbage - n_prefix), str(passkey)


def garbage_length(point: int, interval: int, chars_per_token: float = 3.75, quantum: int = 1024) -> int:
    """Filler characters for test point ``point`` (0-based): ``int(3.75 * (i+1) * interval // 1024 * 1024)``.

    The reference's "rough ratio" of characters to tokens is ``chars_per_token``; the result is rounded
    down to a multiple of ``quantum`` characters (1024 there), and is at least one character.
    """
    return max(int(chars_per_token * (point + 1) * interval // quantum * quantum), 1)
