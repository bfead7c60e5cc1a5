# The appliance's build, run and test entry points. `make test` is the
# README's test command and what CI runs (as root, so privileged tests run).
# Go from PATH, else where its tarball installs (sudo resets PATH).
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN     := bin
LISTEN  ?= 127.0.0.1:9696
DB      ?= $(CURDIR)/var/taas.db
# taasd --version: `git describe`, or "dev" outside a git checkout.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# Go test timeout for the whole suite; CI has 90 minutes, the suite aims at well under 20.
TEST_TIMEOUT ?= 15m

.PHONY: all build run lab test test-short vet generate fuzz clean bench bench-quick deps lint

all: build

build:
	@bash .ci/deps --build
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

# The README's run command. As root: the lab (perf/lab/lab.sh): VM namespaces
# on a bridge with a SPAN copy into taasd's capture interface, a monitor
# namespace, an uplink to a collector namespace behind a router, taasd with
# the XDP data plane on var/lab/taas.db, a sample tap service and flow, a
# ping; Ctrl-C removes it all. Not root: taasd API-only on $(DB), and the
# script says why. LAB_ARGS: see perf/lab/lab.sh --help.
run: lab

lab: build
	@perf/lab/lab.sh --bin $(BIN)/taasd --listen $(LISTEN) --db $(DB) $(LAB_ARGS)

# The side-by-side benchmark (root, ~20 minutes; never part of `make test`):
# taasd, tc mirred, daemonlogger, netsniff-ng and Open vSwitch on the same generated
# traffic (taasd and tc also through a VXLAN tunnel), then the control
# plane. Writes perf/results/latest.* (never README.md: paste the table from
# latest.md, or BENCH_ARGS=--readme README.md). BENCH_ARGS:
# see `bin/taas-bench -h`.
bench: build
	$(GO) build -o $(BIN)/ ./perf/cmd/...
	$(BIN)/taas-bench --taasd $(BIN)/taasd $(BENCH_ARGS)

# The quick look (under a minute once built): taasd and tc mirred at 64 B,
# one repetition of 1 s. Writes perf/results/latest.* like bench.
bench-quick:
	$(MAKE) bench BENCH_ARGS="--quick $(BENCH_ARGS)"

vet:
	$(GO) vet ./...

# staticcheck (a go.mod tool, at the version go.sum pins; staticcheck.conf)
# and go.mod/go.sum as go mod tidy leaves them.
lint:
	$(GO) mod tidy -diff
	$(GO) tool staticcheck ./...

# What building and testing needs (Debian packages, npm packages of the
# browser tests): as root installs what is missing, otherwise says what to
# run (.ci/deps).
deps:
	@bash .ci/deps

# Every test, privileged ones included when run as root (CI is root); then
# the store's and the API's tests again on PostgreSQL (issue 14: the whole
# API suite passes on both engines).
test: deps vet lint
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	TAAS_TEST_DB=postgres $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./control/...

test-short:
	$(GO) test -short -count=1 ./...

# Regenerate bpf2go output (needs clang); CI checks the result has no diff.
# The compiler is pinned so the committed xdpprog objects are reproducible.
BPF2GO_CC     ?= clang-14
BPF2GO_CFLAGS ?= -O2 -mcpu=v3 -Wall -Werror
generate:
	BPF2GO_CC="$(BPF2GO_CC)" BPF2GO_CFLAGS="$(BPF2GO_CFLAGS)" $(GO) generate ./...

# Run every fuzz target for FUZZTIME each (corpus kept under testdata/fuzz).
# A count rather than a duration: under CPU contention a timed run can end in
# Go's fuzz coordinator with "context deadline exceeded" and no crasher.
FUZZTIME ?= 100000x
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf $(BIN)
