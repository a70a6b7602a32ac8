# walfast developer commands.  Everything runs in a virtual environment
# (.venv) that these targets create and fill on a fresh machine.
#
#   make demo    install walfast, then run its main job on a throwaway primary
#   make test    install walfast with its test extra, then run the whole suite
#   make bench   the engine microbenchmarks (never part of `make test`)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: demo test bench venv clean

venv:
	./scripts/ensure-postgresql
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'

demo: venv
	$(PY) -m walfast.demo $(DEMO_ARGS)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) -m pytest benchmarks/bench_engine.py $(PYTEST_ARGS)

clean:
	rm -rf build $(VENV) walfast/*.c walfast/*.so walfast/*.html *.egg-info
