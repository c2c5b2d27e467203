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

.PHONY: venv demo test test-fast chapters clean

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
	$(PY) -m pytest tests chapters --nbval-lax --nbval-current-env -p no:cacheprovider

test-fast: $(STAMP)
	$(PY) -m pytest tests -x -q

# Re-execute every chapter in place (outputs are committed).
chapters: $(STAMP)
	for nb in chapters/*.ipynb; do \
	  $(PY) -m jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=600 "$$nb" || exit 1; \
	done

clean:
	rm -rf $(VENV) build *.egg-info
