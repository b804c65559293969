# make demo: set up .venv and run the main job (MiniLM export + validation). make test: set up and run the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
# The CPU torch wheel lies on this machine's disk (/opt/wheels); elsewhere pip takes the CPU index.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)

.PHONY: demo test venv lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(FIND_LINKS) "$(TORCH)"
	$(PIP) install -q $(FIND_LINKS) "$(TORCH)" -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tracefuse export builtin:all-MiniLM-L6-v2 -o build/minilm --overwrite \
		--text-file examples/sentences.txt --json build/minilm-report.json

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check tracefuse tests benchmarks

clean:
	rm -rf $(VENV) build
