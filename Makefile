# Two commands set up a fresh machine: `make demo` runs the demo, `make test` runs the tests.
# Each bootstraps its own .venv on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck pytest chaos clean bench

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[otel,otlp,structlog-bridge,embedded,ui]' --group dev
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m examples.demo $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy queue_core queue_otel examples grafana bench
	$(VENV)/bin/lint-imports

pytest: $(STAMP)
	$(VENV)/bin/pytest $(ARGS)

test: lint typecheck pytest

# queue_core against arq, SAQ, RQ, Celery, Dramatiq, taskiq and BullMQ on a private Redis,
# each also with its OpenTelemetry instrumentation where one exists (the +otel rows);
# each library gets its own venv under bench/.venvs; then queue_core's worker RSS and the
# start-up of `queue-core worker` to its first job (bench/startup.py). The results replace
# README.md's Benchmarks table; ARGS="--quick" for a smoke run, ARGS="--no-readme" to keep
# README.md. Then the job browser's server time (bench/ui_render.py: 50 queues, 100k jobs).
bench: $(STAMP)
	$(PY) -m bench.run --readme $(ARGS)
	$(PY) -m bench.ui_render

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
