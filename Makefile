# Surge — the two commands a newcomer needs are `make run` and `make test`.

SHELL       := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
BIN       := bin/surge
GOFILES    = $(shell git ls-files --cached --others --exclude-standard '*.go')
TMP       ?= $(or $(TMPDIR),/tmp)
# Where the e2e scenarios write their one-line reports (R1 …), printed
# after the suite.
E2E_REPORT ?= $(TMP)/surge-e2e-report.txt

.PHONY: build run test unit e2e e2e-long bench lint fmt-check vet clean

build: ## Build bin/surge.
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/surge

run: build ## Install what is missing, then run all of Surge on this machine.
	scripts/setup.sh
	$(BIN) up

# timed runs a suite and prints how long it took.
timed = start=$$(date +%s); $(2); echo "== $(1): $$(( $$(date +%s) - start ))s"

test: ## Everything CI runs: lint, unit, e2e (each timed), then a check that nothing was left behind.
	@snapshot=$$(mktemp); scripts/leftovers.sh snapshot > "$$snapshot"; \
	$(call timed,lint,$(MAKE) --no-print-directory lint); \
	$(call timed,unit,$(MAKE) --no-print-directory unit); \
	$(call timed,e2e,$(MAKE) --no-print-directory e2e); \
	scripts/leftovers.sh check "$$snapshot"; rm -f "$$snapshot"

unit: ## Unit and integration tests, with the race detector.
	$(GO) test -race -count=1 -timeout 15m ./...

e2e: ## End-to-end tests: the binary as a user runs it, and the multi-node fault scenarios (built without -race).
	@rm -f $(E2E_REPORT)
	@status=0; E2E_REPORT=$(E2E_REPORT) E2E_ROUNDS=$(E2E_ROUNDS) $(GO) test -count=1 -timeout $(if $(E2E_ROUNDS),60m,20m) -tags e2e ./e2e/... || status=$$?; \
	if [ -s $(E2E_REPORT) ]; then cat $(E2E_REPORT); fi; exit $$status

e2e-long: ## The end-to-end tests with the node faults (R3, R4) repeated E2E_ROUNDS times (default 5).
	$(MAKE) --no-print-directory e2e E2E_ROUNDS=$(or $(E2E_ROUNDS),5)

TRACE     ?= benchmarks/testdata/azure2019-100

# BEFORE=REV also measures the gateway as built at git revision REV, beside
# this one, in the same run (B1, B2, B8).
BEFORE    ?=

bench: ## Benchmarks, side by side with their baselines; prints ratios.
	scripts/setup.sh bench
	@if [ -n "$(BEFORE)" ]; then scripts/gwbench-at.sh $(BEFORE) $(TMP)/gwbench-before; fi
	$(if $(BEFORE),SURGE_BENCH_BEFORE=$(TMP)/gwbench-before) $(GO) run ./benchmarks/cmd/bench
	$(GO) run ./benchmarks/replay -trace $(TRACE) -policy all

lint: fmt-check vet

fmt-check:
	@out=$$(gofmt -l $(GOFILES)); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...

clean:
	rm -rf bin
