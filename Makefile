# Two commands on a fresh machine:  `make book`  and  `make test`.
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PROFILE ?= quick

.PHONY: setup lock book publish test test-slow test-all lint format ci clean bench peer

# --no-compile: Python byte-compiles a module when it is first imported (once, cached), not
# every module of every package at install (62.6 -> 44.6 CPU-seconds of the install on 2 cores)
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile -c constraints.txt -e ".[book,test]"
	@touch $(STAMP)

## make lock: refresh constraints.txt, the pinned environment, from a fresh install of
## pyproject.toml's ranges (newest versions that satisfy them); rerun the chapters after it
lock:
	rm -rf _build/lock-venv && $(PYTHON) -m venv _build/lock-venv
	_build/lock-venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[book,test]"
	{ sed -n '1,3p' constraints.txt; _build/lock-venv/bin/python -m pip freeze --exclude-editable; } > _build/constraints.txt
	mv _build/constraints.txt constraints.txt && rm -rf _build/lock-venv

## make setup: only create .venv and install the project (CI computes its cache key after it)
setup: $(STAMP)

## make book: set up .venv, run every chapter at PROFILE (default quick), build _build/html
book: $(STAMP)
	$(PY) -m ntkbook build --profile $(PROFILE)

## make publish: every chapter at PROFILE (default full; notebooks/publish.yml may cap one at
## quick), cached; the site goes to _build/publish only if every check passes (else exit 1,
## the previous _build/publish untouched)
publish: PROFILE = full
publish: $(STAMP)
	$(PY) -m ntkbook publish --profile $(PROFILE)

## make test: set up .venv, run the fast tier of the test suite (two workers; the 25 slowest
## tests listed at the end, the profile the fast loop is kept within 6 minutes by)
test: $(STAMP)
	$(PY) -m pytest -m "not slow" --durations=25

## make test-slow: the slow tier alone (what test-all adds to test)
test-slow: $(STAMP)
	$(PY) -m pytest -m slow --durations=10

## make test-all: both tiers; the slow one needs every chapter at ci (make book PROFILE=ci,
## else its first test runs them) and uses neural-tangents' environment where it exists
test-all: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

## make ci: what .ci/run does
ci: lint
	$(MAKE) book PROFILE=ci
	$(MAKE) test

clean:
	rm -rf _build book/chapters book/_generated book/_static

## make peer: create neural-tangents' own environment (.peer-venv/) once; make bench needs it
## (the system Python and the standard library only: CI runs it beside `make setup`)
peer:
	$(PYTHON) benchmarks/peer_env.py

## make bench: ntklib against neural-tangents (creates .peer-venv once); SIZE=tiny|small|full
SIZE ?= small
bench: $(STAMP)
	$(PY) benchmarks/run.py --size $(SIZE)
