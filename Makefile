# dcim-edge: `make test` runs everything CI runs; `make demo` runs the demo.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The demo needs only the runtime dependencies: a fresh clone gets to it sooner.
RUN_STAMP := $(VENV)/.installed-run

.PHONY: test lint pytest demo bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy agent collector models simulators tests

pytest: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint pytest

$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(RUN_STAMP)

# DEMO_ARGS, e.g. make demo DEMO_ARGS="--minutes 5 --out /tmp/demo"
demo: $(RUN_STAMP)
	$(VENV)/bin/dcim-sim demo $(DEMO_ARGS)

bench: $(STAMP)
	@for b in bench/*.py; do case $$b in */plant_cases.py|*/_*) ;; *) echo "== $$b"; $(PY) $$b || exit 1;; esac; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
