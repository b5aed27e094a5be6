# amptools — the commands of the README. Everything runs from a local .venv that
# these targets create (or reuse) from pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
LAB_PORT ?= 8888

.PHONY: install test lab demo bench mutate clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## Every test: unit, sample-server, notebook (real kernel) and browser (JupyterLab in chromium).
test: $(STAMP)
	$(PY) -m pytest

## The main job: JupyterLab on notebooks/, against the embedded sample org unless
## AMPLITUDE_SECRET_KEY is set.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --port=$(LAB_PORT) $(ROOT_FLAG)

## The same work headless: tables, marketing CSV and an HTML report under out/.
demo: $(STAMP)
	$(VENV)/bin/amptools demo --out out

bench: $(STAMP)
	for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

## Mutation testing of the pacing, the budget and the client's retries and body reading
## (mutmut; slow, so not part of `make test`): prints the score and every survivor.
mutate: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,mutate]'
	$(PY) tools/mutate.py

clean:
	rm -rf $(VENV) out build *.egg-info .pytest_cache test-artifacts mutants
