# authgate: `make run` starts the demo (stand-in resolver, echo backend, proxy);
# `make test` checks formatting and lints, then runs every test.

CARGO ?= cargo
PROFILE ?= dev
TARGET_DIR := target/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))

.PHONY: all deps build run test bench check-config upgrade clean

all: build

# Every Pingora build needs cmake (libz-ng-sys); fresh machines lack it.
deps:
	@command -v cmake >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing cmake (needed to build Pingora)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >/dev/null; \
	  else \
	    echo "authgate needs cmake to build Pingora: run 'sudo apt-get install -y cmake' (or your OS's equivalent), then retry" >&2; \
	    exit 1; \
	  fi; }
	@command -v cc >/dev/null 2>&1 || { echo "authgate needs a C compiler to build Pingora: install gcc or clang, then retry" >&2; exit 1; }

build: deps
	$(CARGO) build --profile $(PROFILE) --bin authgate

run: build
	AUTHGATE=$(TARGET_DIR)/authgate scripts/demo.sh

# Zero-downtime upgrade of a running authgate to the binary just built (see scripts/upgrade.sh).
upgrade: build
	AUTHGATE=$(TARGET_DIR)/authgate scripts/upgrade.sh $(or $(CONF),conf/authgate.yaml)

check-config: build
	$(TARGET_DIR)/authgate -t -c conf/authgate.yaml

test: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test

# Micro-benchmarks (criterion) and the cache's memory per entry; figures go to BENCHMARKS.md.
bench: deps
	$(CARGO) bench --bench hot_path
	$(CARGO) bench --bench cache_memory

clean:
	$(CARGO) clean
