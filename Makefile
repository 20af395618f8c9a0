# Wrenn. `make up` runs it, `make test` proves it, `make bench` measures it, `make soak` holds it.
# Slow caches live outside the clone so reruns are fast; everything works from nothing too.

SHELL := /bin/bash
WRENN_CACHE ?= /var/tmp/wrenn
export CARGO_TARGET_DIR ?= $(WRENN_CACHE)/target
VENV_E2B := $(WRENN_CACHE)/venv-e2b
VENV_WRENN := $(WRENN_CACHE)/venv-wrenn
VENV_FUZZ := $(WRENN_CACHE)/venv-fuzz
VENV_E2B_PLATFORM := $(WRENN_CACHE)/venv-e2b-platform
VENV_E2B_LATEST := $(WRENN_CACHE)/venv-e2b-latest
# API fuzzing: cases per operation and phase, and the time budget (make test; make soak: more)
FUZZ_CASES ?= 25
FUZZ_SECONDS ?= 150
SOAK_FUZZ_CASES ?= 200
SOAK_FUZZ_SECONDS ?= 900
SOAK_PROPTEST_CASES ?= 20000
export WRENN_IMAGES ?= $(WRENN_CACHE)/images
TEMPLATES ?= minimal python
CARGO ?= cargo
ENVD_LISTEN ?= 127.0.0.1:49983
WRENN_DIR ?= /var/lib/wrenn
WRENN_LISTEN ?= 127.0.0.1:8000

.PHONY: up envd-run test deps lint unit e2b e2b-platform sdk sdk-hosts code-runner code-runner-bench fuzz-api dashboard dashboard-test fuzz-parsers soak fuzz-soak bench envd envd-static images fmt clean-cache

## up: a single-node Wrenn (control plane + host agent) on $(WRENN_LISTEN), data in $(WRENN_DIR);
## the web console at http://$(WRENN_LISTEN)/. WRENN_TEMPLATES=minimal,python,code-runner-beta
## also builds the code runner's template (scripts/up.sh; once, again when its recipe changes)
up: deps dashboard
	@bin=$$(scripts/build-envd-static.sh | tail -1) && \
	$(CARGO) build --release --locked -p wrenn && \
	WRENN_ENVD=$$bin scripts/up.sh $(CARGO_TARGET_DIR)/release/wrenn --data-dir $(WRENN_DIR) --listen $(WRENN_LISTEN)

## envd-run: envd alone on $(ENVD_LISTEN) (for the e2b SDK in debug mode)
envd-run: deps envd
	$(CARGO_TARGET_DIR)/debug/envd --listen $(ENVD_LISTEN)

## test: format check, clippy -D warnings, the structure checks (dependency rule, file lengths, import circles), every Rust test (storage on SQLite and PostgreSQL; the parsers' property tests), the published e2b SDK against envd and (normal mode) against wrenn up, the published wrenn SDK against wrenn up (alone, then with two more registered hosts) and its code runner on code-runner-beta, the API fuzzed from its OpenAPI document, the web console in Chromium
test: deps lint unit e2b e2b-platform sdk sdk-hosts code-runner fuzz-api dashboard-test

deps:
	@scripts/install-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	scripts/check-structure.sh --self-test
	CARGO=$(CARGO) scripts/check-structure.sh

## unit: every Rust test; the storage tests run on SQLite and on a private PostgreSQL that
## scripts/install-postgres.sh installs and starts (or on WRENN_TEST_DATABASE_URL when set)
unit: images
	url="$${WRENN_TEST_DATABASE_URL:-$$(scripts/install-postgres.sh)}" && \
	WRENN_TEST_DATABASE_URL="$$url" $(CARGO) test --workspace --locked --no-fail-fast

envd:
	$(CARGO) build -p envd --locked

## dashboard: the web console from dashboard/ (npm ci from the lock file, type check, Vite build)
## into dashboard/build, which the next cargo build of wrenn embeds; skipped when unchanged
dashboard: deps
	@scripts/build-dashboard.sh >/dev/null

## dashboard-test: the console in Debian's Chromium (playwright-core, headless) against a real
## `wrenn up` with microVMs (slots 4100-4199); screenshots in $(WRENN_CACHE)/dashboard-shots
dashboard-test: images dashboard
	$(CARGO) build -p wrenn --locked
	cd dashboard && WRENN_BIN=$(CARGO_TARGET_DIR)/debug/wrenn DASHBOARD_SHOTS=$(WRENN_CACHE)/dashboard-shots npm test

$(VENV_E2B)/.installed: tests/e2b/requirements.txt
	python3 -m venv $(VENV_E2B)
	$(VENV_E2B)/bin/pip install --quiet --upgrade pip
	$(VENV_E2B)/bin/pip install --quiet --upgrade -r tests/e2b/requirements.txt
	touch $@

e2b: envd $(VENV_E2B)/.installed
	$(VENV_E2B)/bin/pip install --quiet --upgrade e2b
	ENVD_BIN=$(CARGO_TARGET_DIR)/debug/envd $(VENV_E2B)/bin/python -m pytest tests/e2b -q -p no:cacheprovider

$(VENV_E2B_PLATFORM)/.installed: tests/e2b_platform/requirements.txt
	python3 -m venv $(VENV_E2B_PLATFORM)
	$(VENV_E2B_PLATFORM)/bin/pip install --quiet --upgrade pip
	$(VENV_E2B_PLATFORM)/bin/pip install --quiet -r tests/e2b_platform/requirements.txt
	touch $@

## e2b-platform: the published e2b SDK (pinned, normal mode, not debug) against `wrenn up` through
## its E2B API and port proxy (slots 4000-4099); then the newest e2b release, whose failures are
## printed as the list of differences and do not fail the target
e2b-platform: images $(VENV_E2B_PLATFORM)/.installed
	$(CARGO) build -p wrenn --locked
	WRENN_BIN=$(CARGO_TARGET_DIR)/debug/wrenn $(VENV_E2B_PLATFORM)/bin/python -m pytest tests/e2b_platform -q -p no:cacheprovider
	@test -x $(VENV_E2B_LATEST)/bin/python || python3 -m venv $(VENV_E2B_LATEST)
	@$(VENV_E2B_LATEST)/bin/pip install --quiet --upgrade pytest e2b
	@v=$$($(VENV_E2B_LATEST)/bin/python -c 'import importlib.metadata as m; print(m.version("e2b"))'); \
	if WRENN_BIN=$(CARGO_TARGET_DIR)/debug/wrenn $(VENV_E2B_LATEST)/bin/python -m pytest tests/e2b_platform -q -p no:cacheprovider -rf > $(WRENN_CACHE)/e2b-latest.log 2>&1; \
	then echo "e2b $$v (newest): no differences"; \
	else echo "e2b $$v (newest) differs from the pinned release on:"; grep -E '^(FAILED|ERROR) ' $(WRENN_CACHE)/e2b-latest.log || tail -20 $(WRENN_CACHE)/e2b-latest.log; fi

# The wrenn SDK needs Python >= 3.13 (Debian 12 ships 3.11): scripts/find-python313.sh finds one.
$(VENV_WRENN)/.installed: tests/wrenn_sdk/requirements.txt scripts/find-python313.sh
	@py=$$(scripts/find-python313.sh) && rm -rf $(VENV_WRENN) && $$py -m venv $(VENV_WRENN)
	$(VENV_WRENN)/bin/pip install --quiet --upgrade pip
	$(VENV_WRENN)/bin/pip install --quiet -r tests/wrenn_sdk/requirements.txt
	touch $@

## sdk: the published wrenn Python SDK (0.3.0, unchanged) against `wrenn up`
sdk: images $(VENV_WRENN)/.installed
	$(CARGO) build -p wrenn --locked
	WRENN_BIN=$(CARGO_TARGET_DIR)/debug/wrenn $(VENV_WRENN)/bin/python -m pytest tests/wrenn_sdk -q -p no:cacheprovider

## sdk-hosts: the same suite against `wrenn up` plus two `wrenn agent`s registered with tokens
## (WRENN_SDK_HOSTS=3; 127.0.0.5-6, slots 2100-2199); fails unless every host held a capsule
sdk-hosts: images $(VENV_WRENN)/.installed
	$(CARGO) build -p wrenn --locked
	WRENN_SDK_HOSTS=3 WRENN_BIN=$(CARGO_TARGET_DIR)/debug/wrenn \
	  $(VENV_WRENN)/bin/python -m pytest tests/wrenn_sdk -q -p no:cacheprovider

## code-runner: the published wrenn SDK's code runner (wrenn.code_runner, unchanged) against
## `wrenn up` (slots 4500-4599) on code-runner-beta, built once from templates/code-runner-beta
## and kept in $(WRENN_CACHE)/code-runner-sdk until its recipe, wheels or base image change
code-runner: images $(VENV_WRENN)/.installed
	$(CARGO) build -p wrenn --locked
	WRENN_BIN=$(CARGO_TARGET_DIR)/debug/wrenn WRENN_CACHE=$(WRENN_CACHE) \
	  $(VENV_WRENN)/bin/python -m pytest tests/code_runner -q -p no:cacheprovider -s

## code-runner-bench: (in make bench) the first run_code on fresh code-runner capsules against a
## second call, with the suite's server and cached template (tests/code_runner/bench_run_code.py)
code-runner-bench: images $(VENV_WRENN)/.installed
	$(CARGO) build --release --locked -p wrenn
	WRENN_BIN=$(CARGO_TARGET_DIR)/release/wrenn WRENN_CACHE=$(WRENN_CACHE) \
	  $(VENV_WRENN)/bin/python -m pytest tests/code_runner/bench_run_code.py -q -p no:cacheprovider -s

$(VENV_FUZZ)/.installed: tests/fuzz/requirements.txt
	python3 -m venv $(VENV_FUZZ)
	$(VENV_FUZZ)/bin/pip install --quiet --upgrade pip
	$(VENV_FUZZ)/bin/pip install --quiet -r tests/fuzz/requirements.txt
	touch $@

## fuzz-api: schemathesis (pinned) against a real `wrenn up` from its own /openapi.json: no 5xx,
## every answer as documented; $(FUZZ_CASES) cases per operation, at most $(FUZZ_SECONDS) s
fuzz-api: images $(VENV_FUZZ)/.installed
	$(CARGO) build -p wrenn --locked
	WRENN_BIN=$(CARGO_TARGET_DIR)/debug/wrenn FUZZ_VENV=$(VENV_FUZZ) \
	  scripts/fuzz-api.sh $(FUZZ_CASES) $(FUZZ_SECONDS)

## fuzz-parsers: the parsers' property tests (proptest) with PROPTEST_CASES cases (default 256)
fuzz-parsers:
	CARGO="$(CARGO)" scripts/fuzz-parsers.sh $${PROPTEST_CASES:-256}

## fuzz-soak: the long fuzzing (make soak): the API with capsule creation and more cases, the
## parsers with $(SOAK_PROPTEST_CASES) cases per property
fuzz-soak: images $(VENV_FUZZ)/.installed
	$(CARGO) build -p wrenn --locked
	WRENN_BIN=$(CARGO_TARGET_DIR)/debug/wrenn FUZZ_VENV=$(VENV_FUZZ) CARGO="$(CARGO)" \
	  scripts/fuzz-soak.sh $(SOAK_FUZZ_CASES) $(SOAK_FUZZ_SECONDS) $(SOAK_PROPTEST_CASES)

## envd-static: the static binary that goes into guest images (musl when the target is installed)
envd-static:
	@scripts/build-envd-static.sh

## images: every template's kernel, initramfs, root disk and ready snapshot (skipped when unchanged)
images: deps
	@bin=$$(scripts/build-envd-static.sh | tail -1) && \
	$(CARGO) build -p wrenn --locked && \
	for t in $(TEMPLATES); do \
	  $(CARGO_TARGET_DIR)/debug/wrenn template build $$t --images $(WRENN_IMAGES) --envd $$bin || exit 1; \
	done

## bench: every figure as a ratio against a baseline measured in the same run
bench: deps $(VENV_E2B_PLATFORM)/.installed $(VENV_WRENN)/.installed
	$(CARGO) build --release --locked -p envd -p wrenn-bench -p wrenn
	$(CARGO_TARGET_DIR)/release/wrenn-bench envd --envd $(CARGO_TARGET_DIR)/release/envd
	$(MAKE) images
	$(CARGO_TARGET_DIR)/release/wrenn-bench vm --images $(WRENN_IMAGES) --ksm
	$(CARGO_TARGET_DIR)/release/wrenn-bench agent --images $(WRENN_IMAGES)
	$(CARGO_TARGET_DIR)/release/wrenn-bench fork --images $(WRENN_IMAGES)
	$(CARGO_TARGET_DIR)/release/wrenn-bench server --wrenn $(CARGO_TARGET_DIR)/release/wrenn --images $(WRENN_IMAGES)
	WRENN_IMAGES=$(WRENN_IMAGES) $(VENV_E2B_PLATFORM)/bin/python bench/sdk_paths/compare.py --wrenn $(CARGO_TARGET_DIR)/release/wrenn \
	  --e2b-python $(VENV_E2B_PLATFORM)/bin/python --wrenn-python $(VENV_WRENN)/bin/python
	$(CARGO_TARGET_DIR)/release/wrenn-bench scheduler
	$(CARGO_TARGET_DIR)/release/wrenn-bench oci
	$(CARGO_TARGET_DIR)/release/wrenn-bench builds --wrenn $(CARGO_TARGET_DIR)/release/wrenn --images $(WRENN_IMAGES)
	$(CARGO_TARGET_DIR)/release/wrenn-bench cluster --images $(WRENN_IMAGES)
	$(MAKE) code-runner-bench

## soak: the long reliability runs (load held 5 min, churn with VMM kills 10 min; SOAK_* vars
## in scripts/soak.sh make them shorter), figures written into docs/reliability.md; then the
## long fuzzing (fuzz-soak). Fails if any step did not hold, after running them all.
soak: images
	@rc=0; CARGO="$(CARGO)" scripts/soak.sh || rc=1; $(MAKE) fuzz-soak || rc=1; exit $$rc

fmt:
	$(CARGO) fmt --all

clean-cache:
	rm -rf $(WRENN_CACHE)
