# wdev: `make book` builds the book (quick profile, offline); `make test` runs the test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= quick

.PHONY: book test test-all sweep clean help

help:
	@echo "make book    build the book (profile $(PROFILE)) into _build/html"
	@echo "make test    run the test suite (fast tests + smoke book)"
	@echo "make test-all  also the slow tests"
	@echo "make sweep   train every run the profile needs (PROFILE=quick|smoke|fashion|paper)"
	@echo "make clean   remove built outputs (keeps the run store runs/)"

# (Re)install when pyproject.toml is newer than the last install.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (wdev)" >/dev/null
	@touch $(STAMP)

book: $(STAMP)
	$(BIN)/wdev book --profile $(PROFILE)

test: $(STAMP)
	$(BIN)/python -m pytest

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ""

sweep: $(STAMP)
	$(BIN)/wdev sweep --profile $(PROFILE)

clean:
	rm -rf _build book/executed .pytest_cache
