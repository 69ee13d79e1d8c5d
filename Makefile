# umlsd — build, install and test.
#
#   make                 build binaries into bin/, units, man pages and the guest kernel into build/
#   make kernel          build umlsd's guest kernel into build/kernel/ (kernel/README.md)
#   make install         install (honours DESTDIR and PREFIX)
#   make demo            boot a demo guest in a throwaway systemd machine (root)
#   make test            every test tier (unit, privileged, end-to-end)
#   make deps            install the Debian packages the tests need
#   make bench           generator, supervisor and network prep benchmarks

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBEXECDIR ?= $(PREFIX)/libexec
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
# systemd only looks for units and generators in its own directories: ask it.
SYSTEMD_UNITDIR      ?= $(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system)
SYSTEMD_GENERATORDIR ?= $(shell pkg-config --variable=systemdsystemgeneratordir systemd 2>/dev/null || echo /lib/systemd/system-generators)

GO      ?= go
GOFLAGS ?= -trimpath
TESTTIMEOUT ?= 60m
# A count, not a duration: a timed run can end in a spurious "context
# deadline exceeded" from Go's fuzzing engine (golang/go#75804).
FUZZTIME ?= 200000x

# Debian packages the test tiers need (systemd-nspawn for the throwaway
# machine; a UML kernel, busybox and e2fsprogs for guest images; uml-utilities
# as the reference client and COW tools the tests compare against; iproute2,
# iptables (with ebtables) for the guests' taps and firewalls; dnsmasq-base
# for the DNS guest and dig to query it).
# umlsd's guest kernel is built from Debian's kernel source with Debian's
# compiler and tools.
KERNEL_PACKAGES := linux-source-6.1 gcc make bc bison flex xz-utils patch
DEB_PACKAGES := pkg-config systemd systemd-container user-mode-linux uml-utilities busybox-static e2fsprogs \
	iproute2 iptables dnsmasq-base bind9-dnsutils $(KERNEL_PACKAGES)

# The guest kernel: what it is built from, and where it is installed, which
# is the default Kernel= of the programs. KERNEL_FRAGMENTS are further
# configuration fragments, applied after kernel/umlsd.config.
KERNEL_SOURCE    := /usr/src/linux-source-6.1.tar.xz
KERNEL_FRAGMENTS ?=
KERNEL           := $(LIBEXECDIR)/umlsd/linux

COMMANDS := uml-generator uml-supervisor umlctl
UNITS    := uml@.service uml.target
MANPAGES := uml.conf.5 uml-supervisor.8 umlctl.1
# Shell completion for umlctl, where each shell looks for packages' scripts.
COMPLETIONS := bash zsh fish
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d

all: build

build: $(addprefix bin/,$(COMMANDS)) $(addprefix build/units/,$(UNITS)) $(addprefix build/man/,$(MANPAGES)) \
	$(addprefix build/completion/umlctl.,$(COMPLETIONS)) kernel

# The generator links guests to the template where make install puts it;
# umlctl check --units prints the same links. Every program defaults
# Kernel= to the kernel make install puts beside the supervisor.
LDFLAGS := -X main.templatePath=$(SYSTEMD_UNITDIR)/uml@.service -X main.kernelPath=$(KERNEL)

# Real prerequisites, so that "sudo make install" after "make" only copies
# (root's PATH may have no Go).
GO_SOURCES := go.mod go.sum $(shell find . -name '*.go' ! -name '*_test.go' ! -path './.git/*')
bin/%: $(GO_SOURCES) build/dirs
	$(GO) build $(GOFLAGS) -ldflags '$(LDFLAGS)' -o $@ ./cmd/$*

# Units name the installed binaries by absolute path: rebuild them when the
# directories change ("make" then "make install PREFIX=/usr").
DIRS := $(PREFIX) $(BINDIR) $(LIBEXECDIR) $(SYSTEMD_UNITDIR)
build/dirs: FORCE
	@mkdir -p $(@D)
	@echo '$(DIRS)' | cmp -s - $@ || echo '$(DIRS)' >$@

build/units/%: units/% Makefile build/dirs
	@mkdir -p $(@D)
	sed -e 's|@LIBEXECDIR@|$(LIBEXECDIR)|g' -e 's|@BINDIR@|$(BINDIR)|g' $< >$@

# Rebuilt when its source package, patches, fragments or build script
# change; kernel/build itself rebuilds only what a change touches.
kernel: build/kernel/linux
build/kernel/linux: kernel/build kernel/umlsd.config $(wildcard kernel/patches/*.patch) \
		$(wildcard $(KERNEL_SOURCE)) $(KERNEL_FRAGMENTS) build/kernel/fragments
	kernel/build build/kernel $(KERNEL_FRAGMENTS)
	@touch $@

build/kernel/fragments: FORCE
	@mkdir -p $(@D)
	@echo '$(KERNEL_FRAGMENTS)' | cmp -s - $@ || echo '$(KERNEL_FRAGMENTS)' >$@

# The scripts ask umlctl for the guests' names as the user types.
build/completion/umlctl.%: bin/umlctl
	@mkdir -p $(@D)
	bin/umlctl completion $* >$@

# go-md2man turns hyphenation off before .TH, which turns it on again.
build/man/%: doc/%.md Makefile
	@mkdir -p $(@D)
	$(GO) tool go-md2man -in $< | sed -e '/^\.TH /a .nr HY 0' -e '/^\.TH /a .hy 0' >$@

install: build
	install -D -m 0755 bin/uml-generator $(DESTDIR)$(SYSTEMD_GENERATORDIR)/uml-generator
	install -D -m 0644 -t $(DESTDIR)$(SYSTEMD_UNITDIR) $(addprefix build/units/,$(UNITS))
	install -D -m 0755 bin/uml-supervisor $(DESTDIR)$(LIBEXECDIR)/umlsd/uml-supervisor
	install -D -m 0755 build/kernel/linux $(DESTDIR)$(KERNEL)
	install -D -m 0644 build/kernel/linux.config $(DESTDIR)$(KERNEL).config
	install -D -m 0644 build/kernel/linux.version $(DESTDIR)$(KERNEL).version
	install -D -m 0644 build/man/uml.conf.5 $(DESTDIR)$(MANDIR)/man5/uml.conf.5
	install -D -m 0644 build/man/uml-supervisor.8 $(DESTDIR)$(MANDIR)/man8/uml-supervisor.8
	install -D -m 0755 bin/umlctl $(DESTDIR)$(BINDIR)/umlctl
	install -D -m 0644 build/man/umlctl.1 $(DESTDIR)$(MANDIR)/man1/umlctl.1
	install -D -m 0644 build/completion/umlctl.bash $(DESTDIR)$(BASHCOMPDIR)/umlctl
	install -D -m 0644 build/completion/umlctl.zsh $(DESTDIR)$(ZSHCOMPDIR)/_umlctl
	install -D -m 0644 build/completion/umlctl.fish $(DESTDIR)$(FISHCOMPDIR)/umlctl.fish
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/uml

uninstall:
	rm -f $(DESTDIR)$(SYSTEMD_GENERATORDIR)/uml-generator
	rm -f $(addprefix $(DESTDIR)$(SYSTEMD_UNITDIR)/,$(UNITS))
	rm -f $(DESTDIR)$(LIBEXECDIR)/umlsd/uml-supervisor
	rm -f $(DESTDIR)$(KERNEL) $(DESTDIR)$(KERNEL).config $(DESTDIR)$(KERNEL).version
	rm -f $(DESTDIR)$(MANDIR)/man5/uml.conf.5 $(DESTDIR)$(MANDIR)/man8/uml-supervisor.8
	rm -f $(DESTDIR)$(BINDIR)/umlctl $(DESTDIR)$(MANDIR)/man1/umlctl.1
	rm -f $(DESTDIR)$(BASHCOMPDIR)/umlctl $(DESTDIR)$(ZSHCOMPDIR)/_umlctl $(DESTDIR)$(FISHCOMPDIR)/umlctl.fish

# Installs what is missing, nothing if everything is there.
deps:
	@missing=$$(for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# As root, install what the tests need; as another user, the tests that need
# root say so and skip (in CI they fail).
test-deps:
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory deps; fi

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

test: test-deps build lint
	$(GO) test -count=1 -timeout $(TESTTIMEOUT) ./...
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME) ./config

# A test only to reuse the test bed, which tears the machine down whatever
# happens; the build tag keeps it out of make test.
demo: deps build
	$(GO) test -tags demo -count=1 -v -run '^TestDemo$$' ./demo

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 20x ./cmd/uml-generator
	$(GO) test -run '^$$' -bench . -benchtime 10x ./kernel
	$(GO) test -run '^$$' -bench Supervisor -benchtime 5x ./e2e
	$(GO) test -run '^$$' -bench NetworkPrep -benchtime 20x ./netprep
	$(GO) test -run '^$$' -bench Merge -benchtime 5x ./cow
	@# make kernel from nothing, in a directory of its own.
	@d=$$(mktemp -d); t0=$$(date +%s.%N); \
		if kernel/build $$d/kernel >$$d/log 2>&1; then s=0; \
			printf 'make kernel, cold: %.0f s wall on %s CPUs\n' "$$(echo "$$(date +%s.%N) - $$t0" | bc)" "$$(nproc)"; \
		else s=1; echo "make kernel, cold: failed:"; tail -n 20 $$d/log; fi; \
		rm -rf $$d; exit $$s

clean:
	rm -rf bin build

FORCE:
.PHONY: all build kernel install uninstall deps test-deps lint test demo bench clean FORCE
