# make test: install into .venv and run the whole suite. make check: ruff and mypy. make demo: the seed's example through a real agent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test check demo bench soak clean test-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,check,bench,plot]'
	touch $(STAMP)

test: $(STAMP) test-tools
	$(BIN)/python -m pytest

# The checks CI runs before the tests: lint, format and types (configured in pyproject.toml).
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Programs some tests drive, from Debian's packages: docker-compose (validates docker-compose.yml; no
# engine), chromium (the status page test), iproute2 (the network-namespace tests), nftables (the
# lab behind NAT) and nats-server (gateway replicas). Where one is missing, root with apt-get
# installs it without questions; anywhere else, or if that fails, the suite still runs and the
# tests that need it say why they skip.
TOOLS := docker-compose:docker-compose chromium:chromium ip:iproute2 nft:nftables nats-server:nats-server

test-tools:
	@missing=""; for tool in $(TOOLS); do command -v "$${tool%%:*}" >/dev/null 2>&1 || missing="$$missing $${tool#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's$$missing for the tests"; \
	    { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
	      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
	      || echo "could not install$$missing; the tests that need them will skip"; \
	  else \
	    echo "missing$$missing (installing needs root and apt-get); the tests that need them will skip"; \
	  fi; \
	fi

demo: $(STAMP)
	$(BIN)/python examples/demo.py

bench: $(STAMP)
	$(BIN)/python -m bench

soak: $(STAMP)
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) build *.egg-info
