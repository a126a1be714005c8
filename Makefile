# videoworker — run `make help` for the targets.
#
# Lines starting with "#>" are printed by `make help` above the targets; the
# README's set-up section says the same (cmd/videoworker/readme_test.go checks
# the Go version, the test requirements and every time quoted for a target).
#> requirements: Go 1.26.8 or newer; `make run` needs nothing else.
#> `make test` first runs test-deps, which installs what is missing (below).

GO        ?= go
PKGS      ?= ./...
TEST_FLAGS ?= -race -count=1 -timeout 15m

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@sed -n 's/^#> /  /p' $(MAKEFILE_LIST)
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build bin/videoworker
	$(GO) build -o bin/videoworker ./cmd/videoworker

.PHONY: run
run: ## the self-contained demo: embedded Redis, stand-in API, a worker, the dashboard, five jobs into ./data (DEMO_FLAGS=-h lists flags)
	$(GO) build -o bin/videoworker ./cmd/videoworker
	bin/videoworker demo $(DEMO_FLAGS)

.PHONY: test
test: test-deps fmt-check vet staticcheck ## test-deps, gofmt check, go vet, staticcheck, then go test -race
	$(GO) test $(TEST_FLAGS) $(PKGS)

.PHONY: test-deps
test-deps: ## install what the tests need, only if missing: redis-server, chromium, gcc (apt-get; gcc for go test -race), versitygw (go install, ~2 min once)
	@scripts/ensure-test-deps.sh

.PHONY: soak
soak: ## soak: 2,000 jobs, worker processes SIGKILLed, Redis restarted, API faults (~6-9 min on 2 cores; SOAK_FLAGS=-h lists flags)
	$(GO) run ./cmd/soak $(SOAK_FLAGS)

.PHONY: bench
bench: ## performance figures vs targets: table on stdout, JSON in bench/results/ (about 10 min on 2 cores; BENCH_FLAGS=-h lists flags)
	$(GO) build -o bin/bench ./cmd/bench
	bin/bench $(BENCH_FLAGS)

.PHONY: bench-quick
bench-quick: ## every bench figure with small workloads, one run (about 2.5 min)
	$(GO) build -o bin/bench ./cmd/bench
	bin/bench -quick $(BENCH_FLAGS)

.PHONY: bench-micro
bench-micro: ## go test micro-benchmarks of the hot paths (benchstat-friendly; BENCH_COUNT=10 for benchstat)
	$(GO) test -run '^$$' -bench . -benchmem -count $(or $(BENCH_COUNT),1) ./...

.PHONY: fmt-check
fmt-check: ## fail when a file is not gofmt-formatted
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

.PHONY: vet
vet: ## go vet
	$(GO) vet $(PKGS)

.PHONY: staticcheck
staticcheck: ## staticcheck (pinned in go.mod as a tool)
	$(GO) tool staticcheck $(PKGS)

.PHONY: fmt
fmt: ## gofmt -w every Go file
	gofmt -w $$(git ls-files '*.go')

.PHONY: clean
clean: ## remove build output and demo data
	rm -rf bin data
