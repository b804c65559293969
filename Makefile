# make demo: set up .venv and run the main job (MiniLM export + validation). make test: set up and run the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
# The CPU torch wheel lies on this machine's disk (/opt/wheels); elsewhere pip takes the CPU index.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)

.PHONY: demo test venv lint clean gpu-test

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

# make gpu-test, on a machine with an NVIDIA GPU only: puts a CUDA build of torch, onnxruntime-gpu (replacing
# onnxruntime: both provide the onnxruntime module) and tensorrt into the venv, then runs the gpu-marked tests
# and benchmarks/bench_gpu.py (which exits 1 when an issue-8 target is missed). See docs/gpu.md.
gpu-test: $(STAMP)
	@command -v nvidia-smi >/dev/null && nvidia-smi -L || { echo "make gpu-test needs an NVIDIA GPU (no nvidia-smi);" \
		"it would replace onnxruntime with onnxruntime-gpu in $(VENV)"; exit 2; }
	$(PY) -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)" || \
		PIP_FIND_LINKS= $(PIP) install -q --force-reinstall "$(TORCH)"
	$(PIP) uninstall -q -y onnxruntime onnxruntime-gpu || true
	$(PIP) install -q "onnxruntime-gpu>=1.22" "tensorrt>=10"
	$(PY) -m pytest -m gpu $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no gpu tests: failing"; exit 1; fi; exit $$rc
	mkdir -p build && $(PY) benchmarks/bench_gpu.py --json build/bench-gpu.json

lint: $(STAMP)
	$(VENV)/bin/ruff check tracefuse tests benchmarks

clean:
	rm -rf $(VENV) build
