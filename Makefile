# Lockstep — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/lockstep
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
# Packages with concurrency run under the race detector.
RACE_PKGS := ./cluster/... ./engine/... ./httpapi/... ./agent/... ./worker/... ./cmd/... ./e2e/...
UNIT_PKGS := ./hcl/... ./fsm/... ./api/...

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build bin/lockstep (static, CGO_ENABLED=0)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/lockstep

.PHONY: test
test: lint ## Run every test: unit, in-process clusters (race detector) and real agent processes
	$(GO) test -count=1 $(UNIT_PKGS)
	$(GO) test -count=1 -race -timeout 15m $(RACE_PKGS)

.PHONY: demo
demo: build ## Start a local 3-node cluster, run the examples, keep it up until Ctrl-C
	./scripts/demo.sh

.PHONY: lint
lint: ## gofmt, go vet and the import-boundary check
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	./scripts/check-imports.sh

.PHONY: e2e
e2e: ## Container end-to-end suite: 3 agents in Docker, faults injected (needs Docker)
	./scripts/e2e-docker.sh

.PHONY: bench
bench: ## Benchmarks: each FSM command, one instance's life, and a 3-node in-process cluster
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./fsm/
	$(GO) test -run '^$$' -bench ClusterChain3 -benchtime 2000x ./e2e/

.PHONY: fuzz
fuzz: ## Fuzz every parser and HTTP body decoder for 30s each
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./hcl/
	$(GO) test -run '^$$' -fuzz FuzzDirectEval -fuzztime 30s ./hcl/
	$(GO) test -run '^$$' -fuzz FuzzStartBody -fuzztime 30s ./httpapi/
	$(GO) test -run '^$$' -fuzz FuzzWorkerBodies -fuzztime 30s ./httpapi/
	$(GO) test -run '^$$' -fuzz FuzzParseConfig -fuzztime 30s ./agent/

.PHONY: clean
clean: ## Remove build output and demo data
	rm -rf bin .demo
