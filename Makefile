# cryptmilter — see README.md. `make test` is the one command that runs
# every test (installing what it needs when run as root).

GO        ?= go
PREFIX    ?= /usr/local
DESTDIR   ?=
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS   := -X main.version=$(VERSION)
STATICCHECK_VERSION := v0.8.2
GOBIN     := $(shell $(GO) env GOPATH)/bin
BENCHTIME ?= 3x

.PHONY: all build run deps test unit e2e lint bench install clean fuzz

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/cryptmilter ./cmd/cryptmilter

# The embedded default: loopback socket, keystore in ./cryptmilter-data.
run: build
	./bin/cryptmilter serve

# Installs gnupg, gpgsm, openssl, postfix, swaks, miltertest, systemd (for
# systemd-socket-activate), dovecot-core, opendkim, opendkim-tools, python3
# and staticcheck.
deps:
	bash .ci/deps

# Every test: unit and interop tests with the race detector, staticcheck,
# and the end-to-end suites against a real Postfix.
test: deps lint
	CRYPTMILTER_REQUIRE_PEERS=1 $(GO) test -race -count=1 -timeout 20m ./...

unit:
	$(GO) test -race -short ./...

e2e: deps
	CRYPTMILTER_REQUIRE_PEERS=1 $(GO) test -race -count=1 -v -timeout 15m ./test/e2e/

lint:
	$(GO) vet ./...
	@test -x $(GOBIN)/staticcheck || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	$(GOBIN)/staticcheck ./...

# Benchmarks (figures go into the issue notes). CRYPTMILTER_BENCH_KEYS sets
# the size of the generated keyring (default 100000 keys + 10000 certs; it
# is generated once, about a minute, and cached under $TMPDIR).
bench:
	$(GO) test -run '^$$' -bench '^Benchmark(Load|ReloadUnchanged)$$' -benchmem -benchtime $(BENCHTIME) ./keystore/
	$(GO) test -run '^$$' -bench 'Lookup' -benchmem ./keystore/
	$(GO) test -run '^$$' -bench . -benchmem ./crypto/... ./milter/

# Each fuzzer of untrusted input for FUZZTIME (seeds in testdata/fuzz).
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzReadHeader$$' -fuzztime $(FUZZTIME) ./crypto/mime/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./crypto/mime/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/config/
	$(GO) test -run '^$$' -fuzz '^FuzzInspect$$' -fuzztime $(FUZZTIME) ./crypto/openpgp/
	$(GO) test -run '^$$' -fuzz '^FuzzDecrypt$$' -fuzztime $(FUZZTIME) ./crypto/openpgp/
	$(GO) test -run '^$$' -fuzz '^FuzzVerifyCleartext$$' -fuzztime $(FUZZTIME) ./crypto/openpgp/
	$(GO) test -run '^$$' -fuzz '^FuzzDecrypt$$' -fuzztime $(FUZZTIME) ./crypto/smime/
	$(GO) test -run '^$$' -fuzz '^FuzzVerify$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./crypto/smime/
	$(GO) test -run '^$$' -fuzz '^FuzzToDER$$' -fuzztime $(FUZZTIME) ./crypto/smime/

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/doc/cryptmilter $(DESTDIR)/etc/cryptmilter
	install -m 0755 bin/cryptmilter $(DESTDIR)$(PREFIX)/bin/cryptmilter
	install -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/cryptmilter/README.md
	install -m 0644 contrib/cryptmilter.toml $(DESTDIR)$(PREFIX)/share/doc/cryptmilter/cryptmilter.toml.example
	install -d $(DESTDIR)/lib/systemd/system
	install -m 0644 contrib/systemd/cryptmilter.service contrib/systemd/cryptmilter.socket $(DESTDIR)/lib/systemd/system/

clean:
	rm -rf bin
