# hopgate: `make run` starts the whole stack, `make test` runs every test.
#
# Consul and Jaeger are built from source once into bin/ (git-ignored); a
# consul or jaeger named by CONSUL_BIN / JAEGER_BIN is used instead.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

GO       ?= go
BIN      := $(CURDIR)/bin
TOOLS    := deploy/tools
HELLOS   ?= 3
LDFLAGS  := -s -w
# Static binaries: they run on any Linux and in FROM-scratch images.
export CGO_ENABLED := 0

CONSUL_BIN ?= $(or $(shell command -v consul),$(BIN)/consul)
JAEGER_BIN ?= $(or $(shell command -v jaeger),$(BIN)/jaeger)
export CONSUL_BIN JAEGER_BIN

.PHONY: all build tools run test test-e2e loadtest fuzz vet clean help images images-offline test-docker bench bench-go bench-discovery

all: build

help:
	@echo "make run    build what is missing, start Consul, Jaeger, the gateway and $(HELLOS) hellos"
	@echo "make test   vet, unit, integration and end-to-end tests (real Consul and Jaeger)"
	@echo "make build  build bin/hopgate and bin/hello"
	@echo "make tools  build bin/consul and bin/jaeger from source (minutes, once)"
	@echo "make images build the hopgate and hello Docker images ($(HOPGATE_IMAGE), $(HELLO_IMAGE))"
	@echo "make images-offline  build stand-ins for the Consul and Jaeger images from bin/ (no registry needed)"
	@echo "make bench  hopgate beside haproxy, nginx and bare fasthttp and gnet proxies under wrk (installs them with apt-get when missing; ~5 min)"
	@echo "make bench-go  the Go micro-benchmarks of the gateway and the balancers"
	@echo "make bench-discovery  1,000 services x 5 instances in a real Consul, one flapping: route-update latency, Consul requests, memory (~1 min)"

build: $(BIN)/hopgate $(BIN)/hello

# Go's build cache makes these cheap when nothing changed.
$(BIN)/hopgate: FORCE
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./gateway/cmd/hopgate

$(BIN)/hello: FORCE
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./backend/cmd/hello

tools: $(CONSUL_BIN) $(JAEGER_BIN)

$(BIN)/consul: $(TOOLS)/consul/go.mod $(TOOLS)/consul/go.sum
	@mkdir -p $(BIN)
	@echo ">> building Consul $$(awk '/hashicorp\/consul v/{print $$2; exit}' $(TOOLS)/consul/go.mod) from source into bin/ (a few minutes the first time)"
	cd $(TOOLS)/consul && $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ github.com/hashicorp/consul
	@echo ">> built $@"

$(BIN)/jaeger: $(TOOLS)/jaeger/go.mod $(TOOLS)/jaeger/go.sum
	@mkdir -p $(BIN)
	@echo ">> building Jaeger $$(awk '/jaegertracing\/jaeger v/{print $$2; exit}' $(TOOLS)/jaeger/go.mod) from source into bin/ (a few minutes the first time)"
	cd $(TOOLS)/jaeger && $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ github.com/jaegertracing/jaeger/cmd/jaeger
	@echo ">> built $@"

$(BIN)/hopgate-stack: FORCE
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./deploy/local

# The runner is built, not `go run`: a terminal's Ctrl-C would reach `go
# run` too and turn a clean stop into exit status 1.
run: tools build $(BIN)/hopgate-stack
	$(BIN)/hopgate-stack -bin $(BIN) -hellos $(HELLOS)

vet:
	$(GO) vet ./...
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi

# Unit and integration tests run with the race detector; the end-to-end
# tests drive built binaries and run without it. The gateway's tests run
# a second time with the public server on event loops (-event-loops).
test: tools vet
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 15m $$($(GO) list ./... | grep -v /deploy/e2e)
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 5m ./gateway -args -event-loops
	cd deploy/bench/gnet-proxy && $(GO) test -count=1 -timeout 2m ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=15000x
	$(GO) test -count=1 -timeout 20m ./deploy/e2e/...

# Fuzz the parsers, the router and h1's head framing (against net/http's
# reader): briefly in `make test`, longer with
# `make fuzz FUZZTIME=10m`. Findings land in testdata/fuzz as regressions.
# `make test` gives each target a count of inputs, not a time: when a time
# runs out, Go 1.26's fuzzing engine can report its own deadline as a
# failure (go.dev/issue/75804, fixed in Go 1.27), "context deadline
# exceeded" with no input written, and a count has no deadline.
FUZZTIME ?= 1m
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./discovery/routetag
	$(GO) test -run '^$$' -fuzz '^FuzzNormalizePath$$' -fuzztime $(FUZZTIME) ./gateway
	$(GO) test -run '^$$' -fuzz '^FuzzMatch$$' -fuzztime $(FUZZTIME) ./gateway
	$(GO) test -run '^$$' -fuzz '^FuzzHeadLen$$' -fuzztime $(FUZZTIME) ./gateway/h1
	$(GO) test -run '^$$' -fuzz '^FuzzSimpleRequest$$' -fuzztime $(FUZZTIME) ./gateway/h1
	$(GO) test -run '^$$' -fuzz '^FuzzSimpleAnswer$$' -fuzztime $(FUZZTIME) ./gateway/h1

# The resilience scenarios under load, with their figures (also part of
# `make test`): rolling restart, SIGKILL, a hello answering 500, a slow
# hello, every hello failing.
loadtest: tools
	$(GO) test -count=1 -timeout 10m -v -run 'Resilience|SIGKILL|SIGTERM' ./deploy/e2e/ | grep -E '^(---|ok|FAIL)|figures|requests'

test-e2e: tools
	$(GO) test -count=1 -timeout 20m -v ./deploy/e2e/...

# Docker images, FROM scratch: the static binaries above plus this
# machine's CA bundle, each in a build context of its own under bin/.
IMAGE_TAG     ?= dev
HOPGATE_IMAGE ?= hopgate/gateway:$(IMAGE_TAG)
HELLO_IMAGE   ?= hopgate/hello:$(IMAGE_TAG)
CONSUL_IMAGE  ?= hopgate/consul-offline:$(IMAGE_TAG)
JAEGER_IMAGE  ?= hopgate/jaeger-offline:$(IMAGE_TAG)
CA_CERTS      ?= /etc/ssl/certs/ca-certificates.crt
DOCKER        ?= docker
IMAGE_CTX     := $(BIN)/image-context
IMAGE_ARGS     = --build-arg VERSION=$$(git describe --tags --always --dirty 2>/dev/null || echo dev) \
                 --build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
                 --build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ)

images: build
	rm -rf $(IMAGE_CTX)/hopgate $(IMAGE_CTX)/hello
	mkdir -p $(IMAGE_CTX)/hopgate $(IMAGE_CTX)/hello
	cp $(CA_CERTS) $(IMAGE_CTX)/hopgate/ca-certificates.crt
	cp $(CA_CERTS) $(IMAGE_CTX)/hello/ca-certificates.crt
	cp $(BIN)/hopgate $(IMAGE_CTX)/hopgate/
	cp $(BIN)/hello $(IMAGE_CTX)/hello/
	$(DOCKER) build $(IMAGE_ARGS) -t $(HOPGATE_IMAGE) -f deploy/docker/hopgate.Dockerfile $(IMAGE_CTX)/hopgate
	$(DOCKER) build $(IMAGE_ARGS) -t $(HELLO_IMAGE) -f deploy/docker/hello.Dockerfile $(IMAGE_CTX)/hello
	@$(DOCKER) image inspect -f '{{index .RepoTags 0}} {{.Size}} bytes' $(HOPGATE_IMAGE) $(HELLO_IMAGE)

# For machines that cannot pull the official Consul and Jaeger images:
#   make images images-offline
#   CONSUL_IMAGE=hopgate/consul-offline:dev JAEGER_IMAGE=hopgate/jaeger-offline:dev docker compose -f deploy/compose.yaml up
images-offline: tools
	rm -rf $(IMAGE_CTX)/consul $(IMAGE_CTX)/jaeger
	mkdir -p $(IMAGE_CTX)/consul/tmp $(IMAGE_CTX)/jaeger/tmp
	cp $(CONSUL_BIN) $(IMAGE_CTX)/consul/consul
	cp $(JAEGER_BIN) $(IMAGE_CTX)/jaeger/jaeger
	cp deploy/local/jaeger.yaml $(IMAGE_CTX)/jaeger/jaeger.yaml
	$(DOCKER) build -t $(CONSUL_IMAGE) -f deploy/docker/consul-offline.Dockerfile $(IMAGE_CTX)/consul
	$(DOCKER) build -t $(JAEGER_IMAGE) -f deploy/docker/jaeger-offline.Dockerfile $(IMAGE_CTX)/jaeger

# Only the Docker and compose tests (they build their own images).
test-docker: tools
	$(GO) test -count=1 -timeout 10m -v -run 'Docker|Compose|Remote' ./deploy/e2e/

# Side by side with haproxy, nginx and two bare Go proxies, the floors for a
# Go proxy with a goroutine per connection (fasthttp) and on event loops
# (gnet) (deploy/bench; deploy/bench/fasthttp-proxy and gnet-proxy are
# modules of their own, so hopgate depends on neither): the same two upstreams,
# wrk in interleaved rounds, the proxies' CPU per request from /proc. A
# benchmark, not a test; flags through BENCH_ARGS, e.g. BENCH_ARGS='-rounds 5
# -workers 1'. The traced row needs a Jaeger binary; it is skipped without.
BENCH_ARGS ?=
bench: $(BIN)/hopgate $(CONSUL_BIN)
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/hopgate-bench ./deploy/bench
	cd deploy/bench/fasthttp-proxy && $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/fasthttp-proxy .
	cd deploy/bench/gnet-proxy && $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/gnet-proxy .
	$(BIN)/hopgate-bench -bin $(BIN) -consul $(CONSUL_BIN) $$(test -x $(JAEGER_BIN) && echo -jaeger $(JAEGER_BIN)) $(BENCH_ARGS)

# Discovery at scale (deploy/bench/discovery): a Consul dev agent with 1,000
# opted-in services of 5 instances, one instance flapping every second, the
# real watcher and gateway in this process; it prints the route-update
# latency, the gateway's Consul requests per flap, the table build cost and
# memory, then runs bin/hopgate through the same flaps for its own memory. A
# benchmark, not a test; flags through BENCH_DISCOVERY_ARGS, e.g.
# BENCH_DISCOVERY_ARGS='-services 2000 -d 60s'.
BENCH_DISCOVERY_ARGS ?=
bench-discovery: $(BIN)/hopgate $(CONSUL_BIN)
	$(GO) test -run '^$$' -bench '^BenchmarkDiscoveryAtScale$$' -benchtime 1x -timeout 15m ./deploy/bench/discovery/ -args -hopgate $(BIN)/hopgate $(BENCH_DISCOVERY_ARGS)

# The Go micro-benchmarks, a fixed number of iterations to stay short.
BENCHTIME ?= 2000x
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./gateway/ ./gateway/balance/ ./gateway/h1/

clean:
	rm -rf $(BIN)

FORCE:
