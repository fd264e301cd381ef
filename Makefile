# cryptmilter — see README.md. `make test` is the one command that runs
# every test (installing what it needs when run as root).

GO        ?= go
PREFIX    ?= /usr/local
DESTDIR   ?=
# Where `make install` puts things (systemd and systemd-tmpfiles read
# PREFIX/lib/… for PREFIX=/usr and /usr/local alike). The configuration is
# always under SYSCONFDIR, whatever PREFIX.
SYSCONFDIR  ?= /etc
BINDIR      ?= $(PREFIX)/bin
MANDIR      ?= $(PREFIX)/share/man
DOCDIR      ?= $(PREFIX)/share/doc/cryptmilter
UNITDIR     ?= $(PREFIX)/lib/systemd/system
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS   := -X main.version=$(VERSION)
STATICCHECK_VERSION := v0.8.2
GOBIN     := $(shell $(GO) env GOPATH)/bin
BENCHTIME ?= 3x

.PHONY: all build run deps test unit e2e lint bench bench-sidebyside bench-rss timing install uninstall man clean fuzz

all: build

# BUILDDIR: where build puts the binary (tests build elsewhere).
BUILDDIR ?= bin
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BUILDDIR)/cryptmilter ./cmd/cryptmilter

# The embedded default: loopback socket, keystore in ./cryptmilter-data.
run: build
	$(BUILDDIR)/cryptmilter serve

# Installs gnupg, gpgsm, openssl, postfix, swaks, miltertest, systemd (for
# systemd-socket-activate and systemd-analyze), the differential tests' peers
# (MIME-tools, Mail::AuthenticationResults, python3, python3-authres),
# dovecot-core, opendkim and opendkim-tools (the Postfix setups), m4 and
# the shared libraries of sendmail-bin (which the Sendmail suite extracts, not
# installs), systemd-container (the install test's container), make, groff and
# man (the man page tests), staticcheck and, for the RT suite, Request
# Tracker 5 (.ci/deps-rt).
deps:
	bash .ci/deps

# Every test: unit and interop tests with the race detector, staticcheck,
# and the end-to-end suites against a real Postfix and a real Sendmail.
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
	$(GO) test -run '^$$' -bench 'LookupMessage' -benchmem ./keystore/discover/

# cryptmilter (serve, driven by cryptmilter bench) and gpg/openssl per
# message side by side; writes test/bench/out/ (see docs/performance.md).
bench-sidebyside:
	bash test/bench/sidebyside.sh test/bench/out

# Peak RSS of serve and process on 50 MB messages (both directions, both
# protocols) and a decompression bomb, alone and 16 at once; writes
# test/bench/out/rss.txt (see docs/performance.md, "Memory").
bench-rss:
	bash test/bench/rss.sh test/bench/out

# Decryption-oracle timing through a real Postfix (test/e2e/timing_test.go):
# end of DATA to the SMTP reply for every outcome class, TIMING_N messages
# each (median, p95, min, max, the spread between the medians), then
# plain-mail latency while 32 sessions send undecryptable mail.
# CRYPTMILTER_TIMING_SIZE (body bytes), CRYPTMILTER_TIMING_TAP=1 (split
# each span at the milter) and CRYPTMILTER_FLOOD_SESSIONS change the run.
TIMING_N ?= 200
timing: deps
	CRYPTMILTER_REQUIRE_PEERS=1 CRYPTMILTER_TIMING_N=$(TIMING_N) $(GO) test -count=1 -run '^$$' \
		-bench '^BenchmarkOracle(Timing|Flood)$$' -benchtime 1x -timeout 60m ./test/e2e/

# Every fuzzer in the tree (each func Fuzz* of a _test.go file), one after
# another, each for FUZZTIME; a new fuzzer is run without being listed
# here. FUZZFLAGS adds flags (-parallel 1 on a shared machine). Seeds are
# in each package's testdata/fuzz; `go test` runs them too.
FUZZTIME ?= 60s
FUZZFLAGS ?= -fuzzminimizetime 10s
fuzz:
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			d=$$(dirname $$f); echo "$(GO) test -run '^$$' -fuzz '^$$t\$$' -fuzztime $(FUZZTIME) $(FUZZFLAGS) $$d/"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $(FUZZFLAGS) $$d/; \
		done; \
	done

# Installs the binary, the systemd units (their /usr/local/ paths become
# PREFIX's, /etc/ SYSCONFDIR's), tmpfiles.d/cryptmilter.conf, the man pages,
# README and examples under DOCDIR, and SYSCONFDIR/cryptmilter/cryptmilter.toml
# from contrib/cryptmilter.toml only if there is none: an existing
# configuration is never overwritten. README, "Install", lists the steps
# (service user, keystore, Postfix) that follow.
UNITS := cryptmilter.service cryptmilter.socket cryptmilter-keys-check.service cryptmilter-keys-check.timer
install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(TMPFILESDIR) \
		$(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(DOCDIR) $(DESTDIR)$(SYSCONFDIR)/cryptmilter
	install -m 0755 $(BUILDDIR)/cryptmilter $(DESTDIR)$(BINDIR)/cryptmilter
	for u in $(UNITS); do \
		sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/usr/local/share/doc/cryptmilter/|$(DOCDIR)/|g' \
			-e 's|/etc/cryptmilter/|$(SYSCONFDIR)/cryptmilter/|g' contrib/systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u.tmp && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.tmp && mv $(DESTDIR)$(UNITDIR)/$$u.tmp $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	install -m 0644 contrib/systemd/cryptmilter.tmpfiles $(DESTDIR)$(TMPFILESDIR)/cryptmilter.conf
	install -m 0644 contrib/man/cryptmilter.8 $(DESTDIR)$(MANDIR)/man8/cryptmilter.8
	install -m 0644 contrib/man/cryptmilter.toml.5 $(DESTDIR)$(MANDIR)/man5/cryptmilter.toml.5
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -m 0644 contrib/cryptmilter.toml $(DESTDIR)$(DOCDIR)/cryptmilter.toml.example
	install -m 0644 contrib/postfix/main.cf.snippet contrib/postfix/master.cf.snippet \
		contrib/sendmail/sendmail.mc.snippet $(DESTDIR)$(DOCDIR)/
	install -m 0644 contrib/grafana/cryptmilter.json $(DESTDIR)$(DOCDIR)/grafana-dashboard.json
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/cryptmilter/cryptmilter.toml ]; then \
		echo "kept $(DESTDIR)$(SYSCONFDIR)/cryptmilter/cryptmilter.toml (the example is $(DOCDIR)/cryptmilter.toml.example)"; \
	else \
		install -m 0644 contrib/cryptmilter.toml $(DESTDIR)$(SYSCONFDIR)/cryptmilter/cryptmilter.toml; \
	fi

# Removes what install installed, except the configuration and the keystore.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/cryptmilter $(DESTDIR)$(TMPFILESDIR)/cryptmilter.conf \
		$(DESTDIR)$(MANDIR)/man8/cryptmilter.8 $(DESTDIR)$(MANDIR)/man5/cryptmilter.toml.5
	for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$$u; done
	rm -rf $(DESTDIR)$(DOCDIR)

# Regenerates contrib/man/cryptmilter.toml.5 from contrib/cryptmilter.toml
# (after adding or changing a key there; a test fails while it is stale).
man:
	$(GO) run ./internal/mangen -o contrib/man/cryptmilter.toml.5 contrib/cryptmilter.toml

clean:
	rm -rf bin
