# odsflow: see README.md. `make demo` runs the main job on the embedded dev
# stack; `make test` runs everything CI runs.

GO       ?= go
BIN      := bin/odsflow
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
DATE     := $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS  := -X main.version=$(VERSION) -X main.dateBuilt=$(DATE)
CONFIGS  := $(shell find config -name '*.yaml' -not -name '*_benthos_test.yaml' 2>/dev/null)

.PHONY: build test fmt-check vet unit lint-configs test-configs demo bench clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/odsflow

test: fmt-check vet build unit lint-configs test-configs

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# tests/e2e runs the pipeline binary against real servers and kills it on
# purpose: it runs alone, after the other packages, so that their CPU load
# does not stretch its group sessions and timings.
unit:
	$(GO) test -race -count=1 -timeout 12m $$($(GO) list ./... | grep -v /tests/e2e)
	$(GO) test -race -count=1 -timeout 12m ./tests/e2e/

# Every pipeline under config/ must lint clean, and its Benthos config unit
# tests (*_benthos_test.yaml) must pass.
lint-configs: build
	@if [ -n "$(CONFIGS)" ]; then $(BIN) lint $(CONFIGS); else echo "lint-configs: no pipelines under config/ yet"; fi

test-configs: build
	@if [ -n "$(CONFIGS)" ]; then $(BIN) test ./config/...; else echo "test-configs: no pipelines under config/ yet"; fi

# The whole job on the embedded stack: simulated CDC traffic through
# config/ods.yaml into PostgreSQL, a summary, then everything stops.
demo: build
	$(BIN) demo

bench:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m ./...

clean:
	rm -rf bin
