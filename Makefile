# The two commands a newcomer needs:  make demo   and   make test
PYTHON ?= python3.11
SHELL  := bash
.SHELLFLAGS := -eo pipefail -c
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-ray bench results-mems ct-policies results-ct ptycho-policies results-ptycho scatter-policies results-scatter results-bal gain-sets results-live install clean abtem-reference ptychi-env deepinv-env databroker-env test-databroker

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-install whenever the project definition changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(if $(wildcard /opt/wheels),--find-links /opt/wheels) -e '.[learn,dev,docs,epics,bluesky]'
	touch $(STAMP)

install: $(STAMP)

# The edge's gain-set tables (controller/modes/mems/gain_sets.json) from the learner's computation
gain-sets: $(STAMP)
	$(BIN)/python -m learner.mems.edge_gain_sets

demo: $(STAMP)
	$(BIN)/edgetune demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The Ray Tune trials on an embedded Ray (docs/ray.md): the `ray` extra (about a minute to install, 600 MB), then
# the tests marked `ray` (two trials at a time; minutes on two cores). `make test` runs the trials without Ray.
test-ray: $(STAMP)
	$(BIN)/pip install --quiet $(if $(wildcard /opt/wheels),--find-links /opt/wheels) -e '.[learn,dev,ray]'
	$(BIN)/python -m pytest -q -m ray

# The benchmarks quoted in docs/results.md (about 37 minutes, 25 of them `bench ddpg` over 5 seeds a side); each prints one JSON object, kept in runs/bench/
bench: $(STAMP)
	$(BIN)/pip install --quiet $(if $(wildcard /opt/wheels),--find-links /opt/wheels) -e '.[learn,dev,bench,epics]'
	mkdir -p runs/bench
	$(BIN)/edgetune bench loop --rate 1000 --seconds 10 --json | tee runs/bench/loop_1khz.json
	$(BIN)/edgetune bench loop --rate 120 --seconds 60 --json | tee runs/bench/loop_120hz.json
	$(BIN)/edgetune bench swap --rate 1000 --swaps 100 --json | tee runs/bench/swap.json
	$(BIN)/edgetune bench epics | tee runs/bench/epics.json
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

# Live training on the emulated stand (docs/live-training.md): a 20 000-decision simulator run, then live
# fine-tuning from it, a shorter run from scratch and the evaluation of both against it, then a longer
# fine-tuning on a fresh stand (real time: ~4 min of simulator training, then ~16 min live)
LIVE_RESULTS := runs/results/live
results-live: $(STAMP)
	mkdir -p $(LIVE_RESULTS)
	test -f $(LIVE_RESULTS)/sim20k/summary.json || \
	  $(BIN)/edgetune train mems --out $(LIVE_RESULTS)/sim20k --steps 20000 --seed 0 --resume
	rm -rf $(LIVE_RESULTS)/bench $(LIVE_RESULTS)/bench2
	flock /tmp/measure.lock $(BIN)/edgetune bench live --sim-run $(LIVE_RESULTS)/sim20k --out $(LIVE_RESULTS)/bench \
	  --finetune 1200 --scratch 600 --scratch-warmup 120 --decisions 50 --repeats 5 --json
	flock /tmp/measure.lock $(BIN)/edgetune bench live --sim-run $(LIVE_RESULTS)/sim20k --out $(LIVE_RESULTS)/bench2 \
	  --finetune 2500 --scratch 0 --decisions 50 --repeats 5 --json

# The bundled CT policies and the CT results in docs/results.md: three training sets (mixture = Algorithm 2
# on the paper's shapes + broad random objects, the default policy; paper = Algorithm 2 on the shapes only,
# Table 1's policy; naive = Algorithm 1 on the shapes), each on 3 seeds at a fixed episode count (two runs
# at a time, one thread each; a finished run is left as it is, a stopped one resumes exactly), the run to
# ship chosen on the selection split only; then every run
# evaluated on the report split.
CT_RESULTS := runs/results/ct
CT_TRAIN_SEEDS := 0 1 2
CT_EPISODES := 20000
CT_NAIVE_EPISODES := 5000
ct-policies: $(STAMP)
	mkdir -p $(CT_RESULTS)
	for set in mixture paper naive; do for s in $(CT_TRAIN_SEEDS); do echo $$set $$s; done; done | \
	  xargs -P 2 -n 2 sh -c 'out=$(CT_RESULTS)/$$0-seed$$1; \
	    case $$0 in naive) n=$(CT_NAIVE_EPISODES); args="--algo naive --families paper";; \
	    *) n=$(CT_EPISODES); args="--families $$0";; esac; \
	    $(BIN)/edgetune train ct $$args --episodes $$n --seed $$1 --threads 1 --device cpu --resume --out $$out \
	    > $$out.out 2> $$out.log'
	for set in mixture:ct_63 paper:ct_63_paper naive:ct_63_naive; do \
	  $(BIN)/edgetune select ct $(foreach s,$(CT_TRAIN_SEEDS),--run $(CT_RESULTS)/$${set%%:*}-seed$(s)) --device cpu \
	    --to learner/ct/policies/$${set#*:}; done

results-ct: $(STAMP)
	for set in mixture paper; do echo $$set; done | xargs -P 2 -n 1 sh -c '$(BIN)/edgetune eval ct \
	  $(foreach s,$(CT_TRAIN_SEEDS),--run $(CT_RESULTS)/$$0-seed$(s) --naive-run $(CT_RESULTS)/naive-seed$(s)) \
	  --split report --device cpu \
	  --png $(CT_RESULTS)/stopping-$$0.png --json > $(CT_RESULTS)/report-$$0.json'

# Ptychography (docs/ptycho.md): the scan policy on 3 seeds at Table I's 250 = 5 × 50 positions, focused probe,
# MoS₂ training samples, a fixed episode count (the three at once, one thread each; a stopped run resumes
# exactly, a finished one is left as it is); then every run and the baselines on the report split (the full-grid
# references are cached in $(PTYCHO_RESULTS)/refcache: the first evaluation computes them, minutes each).
PTYCHO_RESULTS := runs/results/ptycho
PTYCHO_EPISODES := 800
ptycho-policies: $(STAMP)
	mkdir -p $(PTYCHO_RESULTS)
	for s in $(CT_TRAIN_SEEDS); do echo $$s; done | xargs -P 3 -n 1 sh -c '$(BIN)/edgetune train ptycho \
	  --episodes $(PTYCHO_EPISODES) --seed $$0 --threads 1 --device cpu --resume \
	  --out $(PTYCHO_RESULTS)/seed$$0 > $(PTYCHO_RESULTS)/seed$$0.log 2>&1'

results-ptycho: $(STAMP)
	$(BIN)/edgetune eval ptycho $(foreach s,$(CT_TRAIN_SEEDS),--run $(PTYCHO_RESULTS)/seed$(s)) --split report \
	  --per-cell 8 --cells 250x5 --threads 1 --cache $(PTYCHO_RESULTS)/refcache --png $(PTYCHO_RESULTS) --json \
	  > $(PTYCHO_RESULTS)/report.json
	$(BIN)/edgetune eval ptycho $(foreach s,$(CT_TRAIN_SEEDS),--run $(PTYCHO_RESULTS)/seed$(s)) --split report \
	  --per-cell 8 --cells 250x2,250x3,250x4,335x5,420x5,500x5 --probe focused --no-converge --threads 1 \
	  --cache $(PTYCHO_RESULTS)/refcache --json > $(PTYCHO_RESULTS)/report-cells.json

# Backward action learning (docs/bal.md): every problem's table in docs/results.md — BAL over 3 training seeds per
# real-episode budget, Q-learning at 10× the episodes (its grid chosen on selection seeds), the true-parameter
# oracle, report episodes paired across policies; LQ also on another θ and x0 than the file's. Runs are cached in
# $(BAL_RESULTS)/runs (a rerun reuses them), two problems at a time; the pictures land in $(BAL_RESULTS).
BAL_RESULTS := runs/results/bal
BAL_EVAL = $(BIN)/edgetune eval bal --train-seeds 3 --cache $(BAL_RESULTS)/runs --png $(BAL_RESULTS)
results-bal: $(STAMP)
	mkdir -p $(BAL_RESULTS)
	$(BAL_EVAL) --problem lq --budgets 5,20 --report 4000 --out $(BAL_RESULTS)/lq.json > $(BAL_RESULTS)/lq.txt & p=$$!; \
	  $(BAL_EVAL) --problem lq --theta-true 1.0 --x0=-0.5,1 --budgets 20,60 --report 4000 \
	  --png $(BAL_RESULTS)/lq-other --out $(BAL_RESULTS)/lq-other.json > $(BAL_RESULTS)/lq-other.txt; s=$$?; \
	  wait $$p && exit $$s
	$(BAL_EVAL) --problem forge --budgets $(BAL_FORGE_BUDGETS) --rebuild-every 20 --report 1000 \
	  --out $(BAL_RESULTS)/forge.json > $(BAL_RESULTS)/forge.txt & p=$$!; \
	  $(BAL_EVAL) --problem maze --budgets $(BAL_MAZE_BUDGETS) --report 1000 \
	  --out $(BAL_RESULTS)/maze.json > $(BAL_RESULTS)/maze.txt; s=$$?; wait $$p && exit $$s
	$(BAL_EVAL) --problem maze6 --budgets $(BAL_MAZE6_BUDGETS) --report 1000 --out $(BAL_RESULTS)/maze6.json \
	  > $(BAL_RESULTS)/maze6.txt
BAL_FORGE_BUDGETS ?= 10,20,40
BAL_MAZE_BUDGETS ?= 10,20,40
BAL_MAZE6_BUDGETS ?= 10,20,40

# Inverse scattering (docs/scatter.md): the transceiver policies (Table 1's learned rows; λ and the fixed frequency
# chosen on the selection split), two runs at a time, then the evaluation table on the report split.
SCATTER_RESULTS := runs/results/scatter
SCATTER_UPDATES ?= 300
SCATTER_LAM ?= 1e-6
SCATTER_RUNS := both-ellipses-0 both-ellipses-1 angle-ellipses-0 frequency-ellipses-0 both-circles-0 both-digits-0 both-ellipses-2
scatter-policies: $(STAMP)
	mkdir -p $(SCATTER_RESULTS)
	for r in $(SCATTER_RUNS); do echo $$r; done | xargs -P 2 -n 1 sh -c 'set -- $$(echo $$0 | tr - " "); \
	  $(BIN)/edgetune train scatter --mode $$1 --family $$2 --seed $$3 --fixed-freq 1 --lam $(SCATTER_LAM) \
	  --updates $(SCATTER_UPDATES) --threads 1 --device cpu --resume --out $(SCATTER_RESULTS)/$$1-$$2-$$3 \
	  > $(SCATTER_RESULTS)/$$1-$$2-$$3.log 2>&1'

# The table (docs/scatter.md): per dataset the runs trained on it (learn angle and learn frequency: the ellipses
# runs), every method's λ and the run to ship chosen on the selection split, the report split scored; Born order 3
# on ellipses only (CPU time); held-out families with every run; the private family last. Per-run results are
# cached in $(SCATTER_RESULTS)/cache.
SCATTER_EVAL = $(BIN)/edgetune eval scatter --lam 1e-5,3e-6,1e-6,3e-7 --threads 1 --json \
  --cache $(SCATTER_RESULTS)/cache --png $(SCATTER_RESULTS)/png
SCATTER_OTHERS = --run $(SCATTER_RESULTS)/angle-ellipses-0 --run $(SCATTER_RESULTS)/frequency-ellipses-0
SCATTER_BOTH = $(foreach r,$(filter both-%,$(SCATTER_RUNS)),--run $(SCATTER_RESULTS)/$(r))
results-scatter: $(STAMP)
	$(SCATTER_EVAL) --dataset ellipses --order 2 --order 3 $(SCATTER_OTHERS) \
	  $(foreach r,$(filter both-ellipses-%,$(SCATTER_RUNS)),--run $(SCATTER_RESULTS)/$(r)) \
	  > $(SCATTER_RESULTS)/report-ellipses.json 2> $(SCATTER_RESULTS)/report-ellipses.log
	for d in circles digits; do echo $$d; done | xargs -P 2 -n 1 sh -c '$(SCATTER_EVAL) --dataset $$0 \
	  $(SCATTER_OTHERS) --run $(SCATTER_RESULTS)/both-$$0-0 \
	  > $(SCATTER_RESULTS)/report-$$0.json 2> $(SCATTER_RESULTS)/report-$$0.log'
	$(SCATTER_EVAL) --dataset rectangles --dataset annuli $(SCATTER_BOTH) $(SCATTER_OTHERS) \
	  > $(SCATTER_RESULTS)/report-held-out.json 2> $(SCATTER_RESULTS)/report-held-out.log
	$(SCATTER_EVAL) --dataset blobs $(SCATTER_BOTH) $(SCATTER_OTHERS) \
	  > $(SCATTER_RESULTS)/report-private.json 2> $(SCATTER_RESULTS)/report-private.log

# A peer library's own venv, as the recipe of its `VENV/.installed`: $(call peer-venv,PIP ARGUMENTS)
define peer-venv
	$(PYTHON) -m venv $(@D)
	$(@D)/bin/pip install --quiet --upgrade pip
	$(@D)/bin/pip install --quiet $(1)
	touch $@
endef

# abTEM's reference for the MoS₂ sample (docs/ptycho.md "Sample"): its own venv (abTEM 1.0.x from PyPI), then the
# committed script writes tests/data/ptycho_abtem.npz, which tests/unit/test_ptycho_sample.py compares ours to.
ABTEM_VENV := .venv-abtem
$(ABTEM_VENV)/.installed:
	$(call peer-venv,'abtem==1.0.*')

abtem-reference: $(ABTEM_VENV)/.installed
	PYTHONPATH=$(CURDIR) $(ABTEM_VENV)/bin/python -m firmware_sim.ptycho.abtem_reference tests/data/ptycho_abtem.npz

clean:
	rm -rf $(VENV) runs .pytest_cache

# pty-chi, the peer of `edgetune bench ptycho` (hil/bench/ptycho.py runs it in this venv's python as a subprocess);
# with PyPI's own torch + torchvision (a CPU-only torch wheel breaks PyPI's torchvision, which ptychi imports)
PTYCHI_VENV := .venv-ptychi
ptychi-env: $(PTYCHI_VENV)/.installed
$(PTYCHI_VENV)/.installed:
	$(call peer-venv,'ptychi==2.2.0')

# deepinv, the peer of `edgetune bench scatter` (hil/bench/scatter.py runs hil/bench/deepinv_peer.py in this venv's
# python as a subprocess); with PyPI's own torch, which deepinv requires, and scipy for its Green's function (an
# optional dependency of deepinv)
DEEPINV_VENV := .venv-deepinv
deepinv-env: $(DEEPINV_VENV)/.installed
$(DEEPINV_VENV)/.installed:
	$(call peer-venv,'deepinv==0.5.0' scipy)

# databroker 2 on an in-process Tiled, for the slow check that our Bluesky documents load into a user's catalog
# unchanged (tests/hil/test_documents_hil.py runs tests/databroker_load.py in this venv's python): its own venv,
# as it pulls in ~140 packages (Tiled's server, pandas, dask, zarr, …) that the project does not need
DATABROKER_VENV := .venv-databroker
databroker-env: $(DATABROKER_VENV)/.installed
$(DATABROKER_VENV)/.installed:
	$(call peer-venv,'databroker[all]==2.0.2')

test-databroker: $(STAMP) databroker-env
	$(BIN)/python -m pytest -q -m slow tests/hil/test_documents_hil.py -k databroker
