# poolrt -- build, run, test, install.  `make help` lists the targets.
PREFIX      ?= /usr/local
BUILD       ?= build
CC          ?= cc
PKGS        := luajit libpq
# pkg-config runs when a recipe first needs the flags, not when the Makefile is
# parsed: on a fresh machine `make run` installs luajit2 and libpq-dev (the
# `deps` prerequisite below) before anything is compiled.  Each is computed
# once and fails loudly instead of compiling without include paths.
pkgflags = $(or $(shell pkg-config $(1) $(PKGS) 2>/dev/null),$(error pkg-config $(1) $(PKGS) failed: run `make deps` (or tools/deps.sh core) first))
DEPS_CFLAGS = $(eval DEPS_CFLAGS := $(call pkgflags,--cflags))$(DEPS_CFLAGS)
DEPS_LIBS   = $(eval DEPS_LIBS := $(call pkgflags,--libs))$(DEPS_LIBS)
OPT         ?= -O2 -g
CFLAGS      += -std=c11 -D_POSIX_C_SOURCE=200809L $(OPT) -Wall -Wextra -Werror -fPIC -pthread -Iinclude \
               -I$(BUILD)/gen $(DEPS_CFLAGS)
LDLIBS      += $(DEPS_LIBS) -lm -pthread

# The library is src/ and its subfolders, one concept each (CORE_DIRS); its
# files include each other's headers by plain name (-Isrc on the core's
# compile rule).  The `poolrt` host binary is host/ and sees the library
# only through include/poolrt.h (no -Isrc for it).
HOST_SRC := $(wildcard host/*.c)
HOST_OBJ := $(HOST_SRC:host/%.c=$(BUILD)/obj/host/%.o)
CORE_DIRS := sim
CORE_SRC := $(wildcard src/*.c $(CORE_DIRS:%=src/%/*.c))
CORE_OBJ := $(CORE_SRC:src/%.c=$(BUILD)/obj/%.o)
CORE_HDR := $(wildcard src/*.h $(CORE_DIRS:%=src/%/*.h))
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/%)
LIBS     := $(BUILD)/libpoolrt.so $(BUILD)/libpoolrt.a

.PHONY: all deps run test install clean help
all: $(LIBS) $(BUILD)/poolrt $(TEST_BIN)

help:
	@echo "make            build $(BUILD)/libpoolrt.{so,a}, $(BUILD)/poolrt and the C tests"
	@echo "make run        install missing deps, build, run examples/demo.lua against a throwaway PostgreSQL"
	@echo "make test       install missing deps, build, run every C test and spec against a throwaway PostgreSQL"
	@echo "make install    PREFIX=$(PREFIX)"

deps:
	@tools/deps.sh core

# Every core object depends on every core header (CORE_HDR): a header that
# is added is covered without a change here.
$(BUILD)/obj/%.o: src/%.c include/poolrt.h $(CORE_HDR) | $(BUILD)/obj $(CORE_DIRS:%=$(BUILD)/obj/%) deps
	$(CC) $(CFLAGS) -Isrc -c -o $@ $<

$(BUILD)/obj/host/%.o: host/%.c include/poolrt.h host/host.h | $(BUILD)/obj/host deps
	$(CC) $(CFLAGS) -c -o $@ $<

# The policy sandbox is Lua, compiled to bytecode and linked into the core.
$(BUILD)/obj/policy_state.o: $(BUILD)/gen/policy_boot.h $(BUILD)/gen/policy_views_cdef.h
$(BUILD)/gen/policy_boot.h: src/policy_boot.lua | $(BUILD)/gen deps
	luajit -bg -n policy_boot $< $@
# The views' declarations, for the boot module's ffi.cdef: the one copy is
# src/policy_views.h's PRT_VIEWS block, turned into a C string here.
$(BUILD)/gen/policy_views_cdef.h: src/policy_views.h | $(BUILD)/gen
	{ echo 'static const char prt__views_cdef[] ='; \
	  sed -n '/PRT_VIEWS_BEGIN/,/PRT_VIEWS_END/p' $< | sed 's/\\/\\\\/g; s/"/\\"/g; s/^/    "/; s/$$/\\n"/'; \
	  echo ';'; } > $@

$(BUILD)/obj $(CORE_DIRS:%=$(BUILD)/obj/%) $(BUILD)/obj/host $(BUILD)/gen:
	mkdir -p $@

$(BUILD)/libpoolrt.so: $(CORE_OBJ)
	$(CC) -shared -Wl,-soname,libpoolrt.so -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BUILD)/libpoolrt.a: $(CORE_OBJ)
	rm -f $@ && ar rcs $@ $^

# The host exports the core's symbols so lua/poolrt.lua finds them in ffi.C.
$(BUILD)/poolrt: $(HOST_OBJ) $(CORE_OBJ)
	$(CC) -Wl,--export-dynamic -o $@ $^ $(LDFLAGS) $(LDLIBS) $(shell pkg-config --libs libmicrohttpd 2>/dev/null)

$(BUILD)/test_%: tests/test_%.c tests/pgtest.h $(BUILD)/libpoolrt.a
	$(CC) $(CFLAGS) -Isrc -o $@ $< $(BUILD)/libpoolrt.a $(LDFLAGS) $(LDLIBS) -lcmocka

run: deps all
	tools/with-pg.sh $(BUILD)/poolrt examples/demo.lua

# make test also needs nginx + lua-nginx-module for spec/openresty_spec.lua.
test: deps nginx-deps all
	BUSTED="$(BUILD)/poolrt /usr/bin/busted" tools/with-pg.sh tools/run-tests.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include \
	  $(DESTDIR)$(PREFIX)/share/poolrt/lua/poolrt $(DESTDIR)$(PREFIX)/share/poolrt/lua/resty \
	  $(DESTDIR)$(PREFIX)/share/poolrt/policies
	install -m 755 $(BUILD)/poolrt $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(LIBS) $(DESTDIR)$(PREFIX)/lib/
	install -m 644 include/poolrt.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 lua/poolrt.lua $(DESTDIR)$(PREFIX)/share/poolrt/lua/
	install -m 644 lua/poolrt/*.lua $(DESTDIR)$(PREFIX)/share/poolrt/lua/poolrt/
	if ls lua/resty/*.lua >/dev/null 2>&1; then install -m 644 lua/resty/*.lua $(DESTDIR)$(PREFIX)/share/poolrt/lua/resty/; fi
	if ls policies/*.lua >/dev/null 2>&1; then install -m 644 policies/*.lua $(DESTDIR)$(PREFIX)/share/poolrt/policies/; fi
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(shell sed -n 's/^#define PRT_VERSION "\(.*\)"/\1/p' include/poolrt.h)|' \
	  poolrt.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/poolrt.pc

clean:
	rm -rf $(BUILD)

# Feature targets (bench, nginx, sanitize) live in mk/*.mk.
-include $(wildcard mk/*.mk)

# Pool-logic microbenchmark of the policy boundary (fake connections, no I/O).
$(BUILD)/bench_pick_cost: bench/pick_cost.c $(BUILD)/libpoolrt.a
	$(CC) $(CFLAGS) -Isrc -o $@ $< $(BUILD)/libpoolrt.a $(LDFLAGS) $(LDLIBS)

bench-policy: $(BUILD)/bench_pick_cost
	$(BUILD)/bench_pick_cost
	luajit bench/tick_cost.lua

# Hot reload: switch latency and throughput during reload storms.
bench-reload: deps all
	tools/with-pg.sh $(BUILD)/poolrt bench/reload_bench.lua 3 8
.PHONY: bench-policy bench-reload
