# Two commands on a fresh machine:  `make run` (install + run the pipeline) and `make test` (install + tests).
# Other targets: `make repro` (the same DAG through DVC), `make gpu` (switch params.yaml to the GPU profile).
# Runs that change results/ take .pipeline.lock, so two runs in one workspace cannot interleave.

VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum envs/requirements.txt | cut -c1-12)
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: dvc.yaml study setup run repro checkout remote push pull test gpu profile lint compare exps gpu-check

$(STAMP): envs/requirements.txt
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r envs/requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

# Debian's dataset-fashion-mnist when apt is usable; otherwise prepare falls back to the torchvision download
$(FASHION_MNIST):
	-@command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) || \
	  echo "note: $(FASHION_MNIST) not installed; prepare will try the torchvision download"

setup: $(STAMP) $(FASHION_MNIST)
	@[ -d .git ] || (git init -q && git add -A && git commit -qm "initial" >/dev/null)
	@[ -d .dvc ] || $(BIN)/dvc init -q

# Snakemake runs the DAG; `dvc commit -f` then records the hashes so `dvc repro` / `dvc status` agree. The commit
# relinks the cached outputs from DVC's cache (new mtimes), so `snakemake --touch` re-records Snakemake's view:
# without it the next `snakemake` would take arrays.npz as updated and rerun the whole DAG. run/repro/checkout/pull
# hold .pipeline.lock (exit 75 if another run does) and first remove a Snakemake lock left by a killed run
# (pipeline/workspace.py). CORES=N limits Snakemake's cores.
run: setup
	@$(BIN)/python -m pipeline.workspace run $(if $(CORES),--cores $(CORES))

# DVC runs the DAG; `snakemake --touch` then records provenance so Snakemake sees later params changes.
# ARGS go to dvc repro:  make repro ARGS="-f -s report"
repro: setup
	@$(BIN)/python -m pipeline.workspace repro $(ARGS)

# git checkout + dvc checkout (cached outputs) + snakemake --touch: afterwards both tools have nothing to do
checkout: setup
	@[ -n "$(REV)" ] || { echo "usage: make checkout REV=<commit|branch|tag>" >&2; exit 2; }
	@$(BIN)/python -m pipeline.workspace checkout $(REV)

# the default DVC remote, in .dvc/config (commit it): a folder ../<repo>-dvc-storage, or URL=<any DVC URL>
remote: setup
	@$(BIN)/python -m pipeline.workspace remote $(URL)

# dvc push of the workspace's outputs (ARGS=--all-commits: every commit's); pull = dvc pull + snakemake --touch
push: setup
	@$(BIN)/python -m pipeline.workspace push $(ARGS)

pull: setup
	@$(BIN)/python -m pipeline.workspace pull

test: $(STAMP) $(FASHION_MNIST)
	. $(BIN)/activate && python -m pytest -q -p no:cacheprovider --timeout 900 -n $(or $(JOBS),2) --dist loadfile tests

gpu: $(STAMP)
	$(MAKE) profile P=gpu

# the GPU acceptance check (benchmarks/gpu_check.py): throughput, memory, probe cost and a short GPU-profile chain ->
# benchmarks/results/gpu_check.{json,md}. No venv needed: a GPU box's own python works (the chain also needs
# jsonschema and ruamel.yaml). ARGS=--smoke runs it at tiny sizes on the CPU.
gpu-check:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,python3) benchmarks/gpu_check.py $(ARGS)

# any params profile: merge profiles/$(P)/params.yaml into params.yaml and rewrite dvc.yaml for its variants and seeds
profile: $(STAMP)
	@[ -n "$(P)" ] || { echo "usage: make profile P=<ablations|cpu-long|gpu|imagenet|seeds3>" >&2; exit 2; }
	$(BIN)/python -m pipeline.config switch profiles/$(P)/params.yaml
	$(BIN)/python -m pipeline.dvc_yaml

# dvc.yaml, written from the Snakemake rules (rules/*.smk, the source of truth) and params.yaml; run/repro/profile
# call it, so this target is for a change of rules or of seeds/variants/refinements outside them
dvc.yaml: $(STAMP)
	$(BIN)/python -m pipeline.dvc_yaml

lint: $(STAMP)
	. $(BIN)/activate && snakemake --lint && python -m pipeline.config check

# a profile's run kept as a study: its DAG in .studies/<S>/ (main's params and results stay), its report in studies/<S>/
#   make study S=seeds3 [CORES=2] [ARGS=--reuse-results]   (then commit studies/<S>/)
study: $(STAMP)
	@[ -n "$(S)" ] || { echo "usage: make study S=<profile> (a folder of profiles/)" >&2; exit 2; }
	@$(BIN)/python -m pipeline.study $(S) $(if $(CORES),--cores $(CORES)) $(ARGS)

# compare two commits or DVC experiments from their committed results, without running anything:
#   make compare A=HEAD~1 B=HEAD     (or experiment names from `dvc exp show`, or B=workspace)
compare: $(STAMP)
	@[ -n "$(A)" ] && [ -n "$(B)" ] || { echo "usage: make compare A=<rev|experiment> B=<rev|experiment|workspace>" >&2; exit 2; }
	@$(BIN)/python -m pipeline.compare $(A) $(B)

# the experiments table at terminal width: the headline metrics and the params that differ between rows
exps: $(STAMP)
	@. $(BIN)/activate && dvc exp show --only-changed --drop 'Created|State|Executor|dvc.lock' $(ARGS)
