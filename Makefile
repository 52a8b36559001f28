# orchgate — the two commands: `make demo` (the whole local stack) and `make test` (everything).
# Both install what they need into the checkout and reuse it on the next run.

PYTHON ?= python3
NPM ?= npm
VENV := .venv
AIRFLOW_VENV := .venvs/airflow
PREFECT_VENV := .venvs/prefect
IDP_DIR := deploy/dev-idp
PIP_FLAGS := --quiet --disable-pip-version-check
# The benchmarks run the servers under test on the interpreter of orchgate's image: Debian's
# python3 (the image's base here). A Python built without profile-guided optimization and with
# a shared libpython, as pyenv builds it by default, serves ≈8 % fewer requests
# (docs/performance.md).
RUNTIME_PYTHON ?= /usr/bin/python3
RUNTIME_VENV := .venvs/runtime

.PHONY: demo test install image-tools lint types unit component integration bench bench-tools bench-policy bench-machinery bench-scaling clean-stack check-tools fuzz

demo: install
	$(VENV)/bin/python deploy/local/demo.py

test: install image-tools lint types
	$(VENV)/bin/python -m pytest

install: check-tools $(VENV)/.installed $(AIRFLOW_VENV)/.installed $(PREFECT_VENV)/.installed \
         $(IDP_DIR)/node_modules/.installed

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

types: $(VENV)/.installed
	$(VENV)/bin/mypy

unit: $(VENV)/.installed
	$(VENV)/bin/python -m pytest tests/unit

component: $(VENV)/.installed
	$(VENV)/bin/python -m pytest tests/component

integration: install
	$(VENV)/bin/python -m pytest tests/integration

check-tools:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "orchgate needs Python 3.11 or newer (set PYTHON=...)")'
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' \
	  || (echo "the development identity provider needs Node.js 20 or newer" >&2; exit 1)

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[dev,bench]'
	touch $@

# Airflow and Prefect live in venvs of their own: their dependency trees conflict with each
# other and with orchgate's. The constraints files pin what was tested.
$(AIRFLOW_VENV)/.installed: deploy/local/constraints-airflow.txt
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install $(PIP_FLAGS) -c deploy/local/constraints-airflow.txt apache-airflow==3.3.2
	touch $@

$(PREFECT_VENV)/.installed: deploy/local/constraints-prefect.txt
	test -x $(PREFECT_VENV)/bin/python || $(PYTHON) -m venv $(PREFECT_VENV)
	$(PREFECT_VENV)/bin/pip install $(PIP_FLAGS) -c deploy/local/constraints-prefect.txt prefect==3.9.1
	touch $@

$(IDP_DIR)/node_modules/.installed: $(IDP_DIR)/package.json $(IDP_DIR)/package-lock.json
	cd $(IDP_DIR) && $(NPM) ci --no-audit --no-fund --loglevel=error
	touch $@

# The image test (tests/integration/image) builds and runs the Dockerfile with Debian's buildah
# on a debootstrapped base (DESIGN.md §8): installed here when missing (root, apt).
image-tools:
	@command -v buildah >/dev/null && command -v debootstrap >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah debootstrap; }

clean-stack:
	rm -rf .stack

# The load generator, the upstream and the native peer come from Debian (root, apt).
bench: $(VENV)/.installed $(RUNTIME_VENV)/.installed bench-tools
	ORCHGATE_BENCH_RUNTIME=$(RUNTIME_VENV) $(VENV)/bin/python -m benchmarks.run

bench-tools:
	@command -v wrk >/dev/null && command -v haproxy >/dev/null && test -x /usr/sbin/nginx || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    wrk nginx-light haproxy; }
	@test -x $(RUNTIME_PYTHON) && $(RUNTIME_PYTHON) -c 'import ensurepip' 2>/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    python3 python3-venv; }

$(RUNTIME_VENV)/.installed: pyproject.toml | bench-tools
	test -x $(RUNTIME_VENV)/bin/python || $(RUNTIME_PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/pip install $(PIP_FLAGS) -e '.[bench]'
	touch $@

bench-policy: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/policy_bench.py

bench-machinery: $(VENV)/.installed $(RUNTIME_VENV)/.installed bench-tools
	ORCHGATE_BENCH_RUNTIME=$(RUNTIME_VENV) $(VENV)/bin/python -m benchmarks.machinery

bench-scaling: $(VENV)/.installed $(RUNTIME_VENV)/.installed bench-tools
	ORCHGATE_BENCH_RUNTIME=$(RUNTIME_VENV) $(VENV)/bin/python -m benchmarks.scaling

# Coverage-guided fuzzing of path canonicalization and catalog matching (tests/fuzz/, atheris):
# `make fuzz FUZZ_SECONDS=600`. New inputs go to .fuzz/corpus, crashes to .fuzz/crash-*.
FUZZ_SECONDS ?= 300
fuzz: $(VENV)/.installed
	mkdir -p .fuzz/corpus
	$(VENV)/bin/python tests/fuzz/fuzz_routing.py -max_total_time=$(FUZZ_SECONDS) \
	  -artifact_prefix=.fuzz/ .fuzz/corpus tests/fuzz/corpus
