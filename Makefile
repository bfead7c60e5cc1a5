# The appliance's build, run and test entry points. `make test` is the
# README's test command and what CI runs (as root, so privileged tests run).
GO      ?= go
BIN     := bin
LISTEN  ?= 127.0.0.1:9696
DB      ?= $(CURDIR)/var/taas.db
# Go test timeout for the whole suite; CI has 90 minutes, the suite aims at well under 20.
TEST_TIMEOUT ?= 15m

.PHONY: all build run test test-short vet generate fuzz clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# API-only run on an embedded SQLite under the repo (no data plane needs root).
run: build
	@mkdir -p $(dir $(DB))
	$(BIN)/taasd --listen $(LISTEN) --db $(DB)

vet:
	$(GO) vet ./...

# Every test, privileged ones included when run as root (CI is root).
test: vet
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

test-short:
	$(GO) test -short -count=1 ./...

# Regenerate bpf2go output (needs clang); CI checks the result has no diff.
# The compiler is pinned so the committed xdpprog objects are reproducible.
BPF2GO_CC     ?= clang-14
BPF2GO_CFLAGS ?= -O2 -mcpu=v3 -Wall -Werror
generate:
	BPF2GO_CC="$(BPF2GO_CC)" BPF2GO_CFLAGS="$(BPF2GO_CFLAGS)" $(GO) generate ./...

# Run every fuzz target for FUZZTIME each (corpus kept under testdata/fuzz).
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf $(BIN)
