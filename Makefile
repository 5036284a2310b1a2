# hotgpu — `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/hotgpu/hotgpu/internal/version.Version=$(VERSION)
PREFIX ?= /usr/local
FUZZTIME ?= 10s
FUZZSHORT ?= 3000x
export HOTGPU_CACHE ?= $(HOME)/.cache/hotgpu
# Checks that could not run (vulncheck with no database, depcheck with no
# module proxy) say so here; `make check` lists them at the end.
export HOTGPU_SKIP_LOG ?= $(CURDIR)/$(BIN)/skipped-checks.txt
# go-nvml's header marks many NVML calls deprecated; its bindings wrap them
# all, so every cgo build printed ~30 warnings. go-nvml is the only cgo
# package here besides the standard library (TestCgoPackages), so this flag
# silences that warning class for go-nvml only.
export CGO_CFLAGS ?= -g -O2 -Wno-deprecated-declarations

.PHONY: help generate host-deps build test integration check lint bench bench-go fuzz demo image image-archive install deps deps-kubelet deps-cluster clean fuzz-short vulncheck depcheck depcheck-report

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

host-deps: ## install the Debian packages builds and tests need (gcc for cgo, make, ...)
	@hack/host-deps.sh

build: host-deps ## build hotgpud, hotgpu (+ hotgpu-cdi), hotgpu-hook and kubectl-hotgpu into bin/
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/hotgpud # cgo: go-nvml dlopens libnvidia-ml
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/hotgpu-cdi ./cmd/hotgpu # cgo: 'hotgpu cdi' and 'hotgpu doctor' run in it (NVML)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/hotgpu ./cmd/hotgpu-hook ./cmd/kubectl-hotgpu # static: the CLIs start fast; runtimes run the hook on any host

test: host-deps ## unit tests with the race detector (root runs the cgroup tests too)
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /integration)

INTEGRATION_LOCK ?= /tmp/hotgpu-integration.lock
integration: deps deps-kubelet deps-cluster ## real containerd + runc + Kubernetes tests (root; builds them on first run)
	@echo "integration runs take $(INTEGRATION_LOCK) in turn: kubelet's device-plugin dir is one per host"
	flock $(INTEGRATION_LOCK) $(GO) test -race -count=1 -timeout 20m -v ./integration/... 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

check: ## everything CI runs: lint, deps (report), vulns (when reachable), unit, fuzz (short), integration
	@mkdir -p $(BIN) && rm -f $(HOTGPU_SKIP_LOG)
	@$(MAKE) --no-print-directory lint depcheck-report vulncheck test fuzz-short integration
	@hack/skipped-checks.sh

CONTROLLER_GEN ?= $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.19.0
generate: ## api/hotgpu deepcopy and deploy/crd from the kubebuilder markers (controller-gen)
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/hotgpu/...
	$(CONTROLLER_GEN) crd paths=./api/hotgpu/... output:crd:artifacts:config=deploy/crd

lint: host-deps ## gofmt, go vet, go mod tidy check, generated files current
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) vet ./cmd/hotgpu # the cgo-free CLI's own files
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum not tidy: run go mod tidy"; exit 1; }
	@hack/generated-current.sh

bench: ## hotgpu vs the alternatives, side by side (root; ~3 min) -> bench/RESULTS.md
	$(GO) run ./bench/cmd/hotgpu-bench $(BENCHFLAGS)
	@echo "live attach+detach by pid per runtime setup (v1 cgroupfs, v2 cgroupfs, v2 + systemd driver), ledger on a tmpfs:"
	@mkdir -p /dev/shm/hotgpu-bench-setups && HOTGPU_BENCH_STATE_DIR=/dev/shm/hotgpu-bench-setups \
		$(GO) test -run '^$$' -bench LiveSetups -benchtime 50x -timeout 10m ./integration/ 2>&1 | grep -E '^(Benchmark|ok|FAIL|---)'; \
		rc=$${PIPESTATUS[0]}; rm -rf /dev/shm/hotgpu-bench-setups; exit $$rc

bench-go: ## plain Go benchmarks (go test -bench, 5 runs each: compare them with benchstat)
	$(GO) test -run '^$$' -bench . -benchmem -count 5 $$($(GO) list ./... | grep -v /integration)

fuzz: ## run every fuzz target for FUZZTIME (default 10s); crashers land in testdata/fuzz
	@hack/fuzz.sh $(FUZZTIME)

fuzz-short: ## every fuzz target briefly (FUZZSHORT executions each; CI)
	@hack/fuzz.sh $(FUZZSHORT)

vulncheck: ## govulncheck when its database is reachable; says why it skipped otherwise
	@hack/vulncheck.sh

depcheck: ## fail if a direct dependency has an untaken patch release (docs/security.md lists held-back ones)
	$(GO) run hack/depcheck.go -allow docs/security.md

depcheck-report: ## the same, as a warning only (part of check: the test command must not depend on the day)
	@$(GO) run hack/depcheck.go -allow docs/security.md -report

demo: deps build ## run the demo: real containerd, simulated GPUs, annotation + live attach/detach
	$(GO) run ./integration/demo

deps: ## build containerd, runc and test images into $(HOTGPU_CACHE) (cached)
	@integration/deps.sh >/dev/null
	@integration/systemd-root.sh >/dev/null

deps-kubelet: ## build a real kubelet for the device-plugin test into $(HOTGPU_CACHE) (cached)
	@integration/kubelet-deps.sh >/dev/null

deps-cluster: deps-kubelet ## build etcd, kube-apiserver, -controller-manager, -scheduler, kubectl and CNI plugins into $(HOTGPU_CACHE) (cached)
	@integration/cluster-deps.sh >/dev/null

image: ## build the container image (needs a Docker engine)
	docker build -t hotgpu:$(VERSION) .

IMAGE_ARCHIVE ?= $(BIN)/hotgpu-image.tar
IMAGE_REF ?= hotgpu.local/hotgpu:$(VERSION)
image-archive: build ## the same image without Docker: an OCI archive at IMAGE_ARCHIVE (ctr -n k8s.io images import it)
	CGO_ENABLED=0 $(GO) run ./integration/imagetool -kind hotgpu -ref $(IMAGE_REF) -bin-dir $(BIN) -config etc/hotgpud.yaml -out $(IMAGE_ARCHIVE)

install: build ## install binaries, systemd unit, config and containerd drop-in
	install -D -m 0755 $(BIN)/hotgpud $(DESTDIR)$(PREFIX)/bin/hotgpud
	install -D -m 0755 $(BIN)/hotgpu $(DESTDIR)$(PREFIX)/bin/hotgpu
	install -D -m 0755 $(BIN)/hotgpu-cdi $(DESTDIR)$(PREFIX)/bin/hotgpu-cdi
	install -D -m 0755 $(BIN)/hotgpu-hook $(DESTDIR)$(PREFIX)/bin/hotgpu-hook
	install -D -m 0755 $(BIN)/kubectl-hotgpu $(DESTDIR)$(PREFIX)/bin/kubectl-hotgpu
	install -D -m 0644 etc/systemd/hotgpud.service $(DESTDIR)/etc/systemd/system/hotgpud.service
	install -D -m 0644 etc/containerd/hotgpu.toml $(DESTDIR)/etc/containerd/conf.d/hotgpu.toml
	@# podman / CRI-O read hooks.d; the hook's path follows PREFIX.
	install -d $(DESTDIR)/etc/containers/oci/hooks.d
	sed 's#/usr/local/bin/hotgpu-hook#$(PREFIX)/bin/hotgpu-hook#' etc/hooks.d/hotgpu.json > $(DESTDIR)/etc/containers/oci/hooks.d/hotgpu.json
	test -e $(DESTDIR)/etc/hotgpu/hotgpud.yaml || install -D -m 0600 etc/hotgpud.yaml $(DESTDIR)/etc/hotgpu/hotgpud.yaml

clean: ## remove build output (not the dependency cache)
	rm -rf $(BIN)
