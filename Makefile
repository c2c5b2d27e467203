# Two commands a newcomer needs (README): `make demo` and `make test`. Both create .venv on first use and install
# the package in editable mode with its `test` and `book` extras (pyproject.toml).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# A CPU build of torch: `pip install torch==2.13.0` takes one here. Elsewhere on Linux, add the CPU index, e.g.
#   make TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu" test
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast chapters chapters-check clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_INDEX) "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,book]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m minglm4v demo

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest tests chapters --nbval-lax --nbval-current-env -p no:cacheprovider

test-fast: $(STAMP)
	$(PY) -m pytest tests -x -q

# Rebuild every chapter notebook from its jupytext source (chapters/src/NN_name.py -> chapters/NN_name.ipynb) and
# execute it in place (outputs are committed). Runs from the repository root whatever the working directory, and the
# kernel imports this tree's minglm4v.
# One chapter only: `make chapters CHAPTERS=chapters/src/03_mrope.py`.
ROOT := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
CHAPTERS ?= chapters/src/[0-9][0-9]_*.py
chapters: $(STAMP)
	cd "$(ROOT)" && for src in $(CHAPTERS); do \
	  nb="chapters/$$(basename "$$src" .py).ipynb"; \
	  $(PY) -m jupytext --quiet --update --to notebook --output "$$nb" "$$src" || exit 1; \
	  PYTHONPATH="$(ROOT)" $(PY) -m jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=600 "$$nb" || exit 1; \
	done

# Only check that every notebook still matches its source (no execution).
chapters-check: $(STAMP)
	cd "$(ROOT)" && $(PY) -m pytest tests/test_chapters.py -q -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info
