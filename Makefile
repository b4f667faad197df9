# fedimage: `make demo` converts the embedded sample; `make test` runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test test-fast lint bench sample docs clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e .
	touch $@

# torch is pinned to 2.13.0: the CPU build this project tests against.
$(VENV)/.test: $(VENV)/.core
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[test,torch,hf,export,report,privacy,pfl,ray,flower,dicom]'
	touch $@

demo: $(VENV)/.core
	$(BIN)/fedimage demo -o out/sample.h5

test: $(VENV)/.test
	$(BIN)/python -m pytest

# Everything but the tests marked slow (Ray, Flower, pfl-research, training, the docs build).
test-fast: $(VENV)/.test
	$(BIN)/python -m pytest -m "not slow"

lint: $(VENV)/.test
	$(BIN)/ruff check src tests scripts bench
	$(BIN)/ruff format --check src tests scripts bench

# The documentation site (mkdocs.yml, docs/); tests/test_docs.py builds it too.
docs: $(VENV)/.test
	$(BIN)/mkdocs build --strict -d out/site

bench: $(VENV)/.test
	$(PIP) install -e '.[bench]'
	$(BIN)/python bench/convert.py

# Rebuild the embedded sample from Debian's openclipart-svg and openclipart-png packages.
sample: $(VENV)/.core
	$(BIN)/python scripts/build_openclipart_sample.py --variant small --seed 3 \
		--out src/fedimage/data/openclipart_sample

clean:
	rm -rf $(VENV) out build *.egg-info src/*.egg-info
