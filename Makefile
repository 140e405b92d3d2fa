# Surge — the two commands a newcomer needs are `make run` and `make test`.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
BIN       := bin/surge
GOFILES    = $(shell git ls-files --cached --others --exclude-standard '*.go')

.PHONY: build run test unit e2e bench lint fmt-check vet clean

build: ## Build bin/surge.
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/surge

run: build ## Install what is missing, then run all of Surge on this machine.
	scripts/setup.sh
	$(BIN) up

test: fmt-check vet unit e2e ## Everything CI runs.

unit: ## Unit and integration tests, with the race detector.
	$(GO) test -race -count=1 -timeout 15m ./...

e2e: ## End-to-end tests: build the binary and use it as a user would.
	$(GO) test -race -count=1 -timeout 10m -tags e2e ./e2e/...

TRACE     ?= benchmarks/testdata/azure2019-100

bench: ## Benchmarks, side by side with their baselines; prints ratios.
	scripts/setup.sh bench
	$(GO) run ./benchmarks/cmd/bench
	$(GO) run ./benchmarks/replay -trace $(TRACE) -policy all

lint: fmt-check vet

fmt-check:
	@out=$$(gofmt -l $(GOFILES)); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...

clean:
	rm -rf bin
