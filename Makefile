# The two commands a newcomer needs:  make demo   and   make test
PYTHON ?= python3.11
SHELL  := bash
.SHELLFLAGS := -eo pipefail -c
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench results-mems install clean

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

# The benchmarks quoted in docs/results.md (about 35 minutes, 25 of them `bench ddpg` over 5 seeds a side); each prints one JSON object, kept in runs/bench/
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

# The MEMS results in docs/results.md: each gain set trained on 3 seeds (two at a time: training is
# single-threaded), then every run evaluated on the report test seeds (5000, ...), which no choice has seen.
MEMS_RESULTS := runs/results/mems
MEMS_TRAIN_SEEDS := 0 1 2
MEMS_REPORT_SEEDS := 16
results-mems: $(STAMP)
	mkdir -p $(MEMS_RESULTS)
	for set in robust wide; do for s in $(MEMS_TRAIN_SEEDS); do echo $$set $$s; done; done | \
	  xargs -P 2 -n 2 sh -c 'test -f $(MEMS_RESULTS)/$$0-seed$$1/summary.json || \
	    $(BIN)/edgetune train mems --out $(MEMS_RESULTS)/$$0-seed$$1 --gain-set $$0 --seed $$1 --resume \
	    > $(MEMS_RESULTS)/$$0-seed$$1.log 2>&1'
	for set in robust wide; do for d in wiener sine steps bursts; do \
	  $(BIN)/edgetune eval mems $$(for s in $(MEMS_TRAIN_SEEDS); do echo --run $(MEMS_RESULTS)/$$set-seed$$s; done) \
	    --disturbance $$d --split report --seeds $(MEMS_REPORT_SEEDS) --out $(MEMS_RESULTS)/eval-$$set \
	    --json > $(MEMS_RESULTS)/eval-$$set-$$d.json 2> $(MEMS_RESULTS)/eval-$$set-$$d.err; done; done

clean:
	rm -rf $(VENV) runs .pytest_cache
