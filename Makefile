# The two commands: `make demo` and `make test`. Everything else is for developers.
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 4000

.PHONY: demo test setup test-setup bench-setup bench bench-micro bench-load bench-chaos lint typecheck fmt clean image test-container

demo: setup
	PORT=$(PORT) $(PY) -m gateway demo --port $(PORT)

# CI runs exactly this (.ci/run): lint, types (mypy, the _core stubs against the built module), then the tests
test: test-setup
	$(MAKE) --no-print-directory lint typecheck
	cargo test --quiet
	$(PY) -m pytest -q tests

setup:
	@bash scripts/setup.sh

# the container image (podman; a local Debian base and a host-built wheel: no registry needed); IMAGE= to rename
IMAGE ?= localhost/ai-gateway:latest
image: setup
	@bash scripts/image.sh $(IMAGE)

# the image built from this checkout and run against the simulator (also part of `make test`)
test-container: test-setup
	$(PY) -m pytest -q tests/container

test-setup:
	@bash scripts/setup.sh --test

# benchmarks measure the release build (fat LTO); tests use the fast profile
bench: bench-setup bench-micro bench-load

bench-setup:
	@GATEWAY_PROFILE=release bash scripts/setup.sh --test

bench-micro:
	$(PY) -m pytest benches --benchmark-enable --benchmark-only -q --benchmark-columns=min,median,mean,ops,rounds

bench-load:
	$(PY) -m benches.load.run

bench-chaos:
	$(PY) -m benches.chaos.run
	$(PY) -m benches.chaos.hedging

lint:
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/ruff format --check python tests benches
	cargo fmt --check
	cargo clippy --quiet -- -D warnings

typecheck:
	$(PY) -m mypy
	$(PY) -m mypy.stubtest gateway._core

fmt:
	$(VENV)/bin/ruff format python tests benches
	$(VENV)/bin/ruff check --fix python tests benches
	cargo fmt

clean:
	rm -rf target .gateway .pytest_cache .benchmarks
