# The two commands a newcomer needs:  make demo   and   make test
PYTHON ?= python3.11
SHELL  := bash
.SHELLFLAGS := -eo pipefail -c
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-install whenever the project definition changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(if $(wildcard /opt/wheels),--find-links /opt/wheels) -e '.[learn,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgetune demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The benchmarks quoted in the README (about 9 minutes); each prints one JSON object, kept in runs/bench/
bench: $(STAMP)
	$(BIN)/pip install --quiet $(if $(wildcard /opt/wheels),--find-links /opt/wheels) -e '.[learn,dev,bench]'
	mkdir -p runs/bench
	$(BIN)/edgetune bench loop --rate 1000 --seconds 10 --json | tee runs/bench/loop_1khz.json
	$(BIN)/edgetune bench loop --rate 120 --seconds 60 --json | tee runs/bench/loop_120hz.json
	$(BIN)/edgetune bench swap --rate 1000 --swaps 100 --json | tee runs/bench/swap.json
	$(BIN)/edgetune bench loop --rate 1000 --seconds 10 --cpus 0 --json | tee runs/bench/loop_1khz_cpu0.json
	$(BIN)/edgetune bench swap --rate 1000 --swaps 100 --cpus 0 --json | tee runs/bench/swap_cpu0.json
	$(BIN)/edgetune bench policy --json | tee runs/bench/policy.json
	$(BIN)/edgetune bench ddpg --json | tee runs/bench/ddpg.json
	$(BIN)/edgetune bench sirt --json | tee runs/bench/sirt.json
	$(BIN)/edgetune bench fuzz --cases 10000 --json | tee runs/bench/fuzz.json

clean:
	rm -rf $(VENV) runs .pytest_cache
