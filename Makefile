# pipeline: every task has a target; CI calls the same targets. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
PYTEST_ARGS ?=
# pytest with its plugins named rather than discovered: a discovered plugin has every module of
# its distribution rewritten for assertions at each start (hypothesis and schemathesis: about
# 3 s of each pytest process, as PYTHONDONTWRITEBYTECODE keeps the rewrite from being cached).
PYTEST := PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 OMP_WAIT_POLICY=PASSIVE $(BIN)/pytest -p xdist.plugin -p _hypothesis_pytestplugin -p schemathesis.pytest.plugin

.PHONY: help install dev run test test-ray test-browser test-s3 test-quality test-bench test-fast bench bench-serve bench-tune bench-predict-ray bench-train-ray bench-s3 bench-quality bench-smoke lint format typecheck lock clean docker-build docker-test

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-17s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.txt requirements-ray.txt requirements-report.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-ray.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-report.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

install: $(STAMP) ## Create .venv and install the pinned runtime + the package (editable)

dev: $(DEV_STAMP) ## install + the pinned test and lint tools

run: install ## The main job: train, evaluate with 5-fold CV, write the report, on the built-in house prices
	$(BIN)/pipeline train
	$(BIN)/pipeline evaluate --folds 5
	$(BIN)/pipeline report -o reports/latest.html
	@echo "report: file://$(CURDIR)/reports/latest.html"

test: dev ## Run the test suite but the quality, Ray, benchmark-smoke, browser and S3 suites (CI runs them all)
	$(PYTEST) -n 2 --dist worksteal -m "not quality and not ray and not bench and not browser and not s3" $(PYTEST_ARGS)

test-quality: dev ## The default model's quality on real data over several seeds (issue 13's acceptance; about 1 min)
	$(PYTEST) -n 0 -m quality tests/ $(PYTEST_ARGS)

test-bench: dev ## Every benchmark at tiny sizes, so that none rots (no timing asserted; the Ray and S3 ones run in test-ray, test-s3)
	$(PYTEST) -n 2 -m "bench and not ray and not s3" tests/test_bench_smoke.py $(PYTEST_ARGS)

test-ray: dev ## Tests against a real local Ray cluster (head + a worker node)
	$(PYTEST) -n 0 -p no:randomly -m ray tests/ $(PYTEST_ARGS)

test-browser: dev ## Pages checked in a real headless Chromium (installed first on CI if missing)
	bash scripts/ensure-browser.sh
	$(PYTEST) -n 0 -p no:randomly -m browser tests/ $(PYTEST_ARGS)

test-s3: dev ## PIPELINE_STORE=s3://... against a real S3-compatible server (SeaweedFS, on loopback), and bench/s3.py at tiny sizes
	$(PYTEST) -n 0 -p no:randomly -m s3 tests/ $(PYTEST_ARGS)

test-fast: dev ## The inner loop: tests not marked slow (none trains on real data or starts a process; < 1 min)
	$(PYTEST) -n 2 -m "not slow and not quality and not ray and not bench and not browser and not s3" $(PYTEST_ARGS)

bench: dev ## Run every benchmark and print every ratio (10-15 min on 2 cores; not in make test)
	$(BIN)/python bench/run.py

bench-serve: dev ## Load-test pipeline serve beside a trivial app (BASELINE=ref adds that commit), then SIGTERM
	$(BIN)/python bench/serve_load.py $(if $(BASELINE),--baseline $(BASELINE))

bench-tune: dev ## The search on Ray: trials/min with 1 and 2 at a time, Ray's overhead vs a plain loop
	$(BIN)/python bench/run.py --only tune

bench-predict-ray: dev ## Distributed predict on Ray: rows/s with 1 and 2 workers vs the in-process loop, peak RSS per worker
	$(BIN)/python bench/run.py --only predict_ray

bench-train-ray: dev ## Data-parallel training on Ray: rows/s with 1 and 2 workers vs the in-process loop, peak RSS per worker (10M rows; ROWS=n for fewer)
	$(BIN)/python bench/train_ray.py $(if $(ROWS),--rows $(ROWS))

bench-s3: dev ## The object store vs a local folder: package, release create, predict cold start (starts SeaweedFS)
	$(BIN)/python bench/run.py --only s3

bench-quality: dev ## Model quality: the default recipe vs HistGradientBoosting and a linear model, 16 real tables x 3 seeds (~2 min)
	$(BIN)/python bench/quality.py

bench-smoke: dev ## Tiny-size run of every benchmark (what tests/test_bench_smoke.py runs)
	$(BIN)/python bench/run.py --quick

lint: dev ## ruff lint + format check, mypy on src/, hadolint on the Dockerfile
	$(BIN)/ruff check src tests docker
	$(BIN)/ruff format --check src tests docker
	$(BIN)/mypy
	$(BIN)/hadolint --failure-threshold warning Dockerfile

format: dev ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff format src tests docker
	$(BIN)/ruff check --fix src tests docker

typecheck: dev ## mypy --strict on src/
	$(BIN)/mypy

lock: ## Regenerate requirements.txt from a clean install of pyproject's dependencies
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet .
	{ sed -n '1,2p' requirements.txt; .lock-venv/bin/pip freeze --all --exclude pipeline --exclude pip | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.txt && rm -rf .lock-venv

docker-build: install ## Build the image from a release in ./store (running the build chain if none); prints its size
	$(BIN)/python docker/build.py $(DOCKER_BUILD_ARGS)

docker-test: dev ## Build, serve and probe the image end to end (docker or podman; minutes; not in make test)
	$(BIN)/pytest -v tests/container $(PYTEST_ARGS)

clean: ## Remove the virtualenv, caches and the local store
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache store
