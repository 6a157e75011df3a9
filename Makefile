# Every target sets up .venv from nothing when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test demo clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist loadgroup --durations=15 tests

demo: $(STAMP)
	$(PY) -m vivit_adapter.demo --workdir=runs/demo

clean:
	rm -rf $(VENV) runs
