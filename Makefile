# Build and install unionfuse: the binary, mount(8)'s helper for `-t fuse.unionfuse`, man pages
# and bash/zsh/fish completions (generated from the clap definitions by examples/gen_docs.rs).
#
#   make                                  # cargo build --release, and the generated docs
#   make install [PREFIX=/usr/local] [DESTDIR=...] [HELPERDIR=/sbin]
#   make uninstall [same variables]
#
# PROFILE=dev installs the debug build and CARGO_FLAGS adds cargo flags: the test suite passes
# PROFILE=dev CARGO_FLAGS=--features=fault-injection, the build it runs with (nothing rebuilt).
#
# mount(8) looks for helpers only in /sbin (and /sbin/fs.d, /sbin/fs), so the helper goes to
# HELPERDIR=/sbin whatever the PREFIX; it runs $(BINDIR)/unionfuse by its absolute path.

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
BASHDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHDIR ?= $(PREFIX)/share/zsh/site-functions
FISHDIR ?= $(PREFIX)/share/fish/vendor_completions.d
HELPERDIR ?= /sbin
CARGO ?= cargo
PROFILE ?= release
CARGO_FLAGS ?=
OUT := target/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))
GEN := $(OUT)/gen-docs

.PHONY: all build docs install uninstall
all: build docs

build:
	$(CARGO) build --profile $(PROFILE) $(CARGO_FLAGS)

docs:
	$(CARGO) run --profile $(PROFILE) $(CARGO_FLAGS) --quiet --example gen_docs -- $(GEN)

install: build docs
	install -D -m 755 $(OUT)/unionfuse $(DESTDIR)$(BINDIR)/unionfuse
	install -d $(DESTDIR)$(HELPERDIR)
	sed 's|@BINDIR@|$(BINDIR)|' scripts/mount.fuse.unionfuse > $(DESTDIR)$(HELPERDIR)/mount.fuse.unionfuse
	chmod 755 $(DESTDIR)$(HELPERDIR)/mount.fuse.unionfuse
	install -d $(DESTDIR)$(MANDIR)/man1
	install -m 644 $(GEN)/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -D -m 644 $(GEN)/completions/unionfuse.bash $(DESTDIR)$(BASHDIR)/unionfuse
	install -D -m 644 $(GEN)/completions/_unionfuse $(DESTDIR)$(ZSHDIR)/_unionfuse
	install -D -m 644 $(GEN)/completions/unionfuse.fish $(DESTDIR)$(FISHDIR)/unionfuse.fish

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/unionfuse $(DESTDIR)$(HELPERDIR)/mount.fuse.unionfuse
	rm -f $(DESTDIR)$(MANDIR)/man1/unionfuse.1 $(DESTDIR)$(MANDIR)/man1/unionfuse-*.1
	rm -f $(DESTDIR)$(BASHDIR)/unionfuse $(DESTDIR)$(ZSHDIR)/_unionfuse
	rm -f $(DESTDIR)$(FISHDIR)/unionfuse.fish
