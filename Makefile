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

.PHONY: all build tools run test test-unit test-e2e vet fmt clean help

all: build

help:
	@echo "make run    build what is missing, start Consul, Jaeger, the gateway and $(HELLOS) hellos"
	@echo "make test   vet, unit, integration and end-to-end tests (real Consul and Jaeger)"
	@echo "make build  build bin/hopgate and bin/hello"
	@echo "make tools  build bin/consul and bin/jaeger from source (minutes, once)"

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
# tests drive built binaries and run without it.
test: tools vet
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 15m $$($(GO) list ./... | grep -v /deploy/e2e)
	$(GO) test -count=1 -timeout 20m ./deploy/e2e/...

test-e2e: tools
	$(GO) test -count=1 -timeout 20m -v ./deploy/e2e/...

clean:
	rm -rf $(BIN)

FORCE:
