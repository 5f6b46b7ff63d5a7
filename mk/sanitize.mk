# Sanitizers and valgrind (docs/testing.md#sanitizers-and-valgrind).
#   make sanitize   ASan+UBSan build: C tests and every spec; TSan build: C
#                   tests and the threaded specs
#   make valgrind   C tests under memcheck: no errors, no definite leaks
# POOLRT_DEBUG: assert the lock rules (src/internal.h, "Lock assertions").
SAN_COMMON := -O1 -g -fno-omit-frame-pointer -DPOOLRT_DEBUG
ASAN_FLAGS := $(SAN_COMMON) -fsanitize=address,undefined -fno-sanitize-recover=undefined
TSAN_FLAGS := $(SAN_COMMON) -fsanitize=thread
THREADED_SPECS := spec/pool_spec.lua spec/reload_spec.lua spec/multitenant_spec.lua spec/policy_engine_spec.lua \
                  spec/shared_budget_spec.lua spec/record_spec.lua spec/multiplex_spec.lua spec/batch_spec.lua \
                  spec/workers_spec.lua spec/cluster_spec.lua spec/replicas_spec.lua
SUPP := $(CURDIR)/tools/sanitizers

.PHONY: sanitize sanitize-asan sanitize-tsan valgrind deps-sanitize
deps-sanitize:
	@tools/deps.sh core nginx sanitize

sanitize: sanitize-asan sanitize-tsan

sanitize-asan: deps-sanitize
	$(MAKE) BUILD=build/asan CC=clang OPT="$(ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" all
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 \
	LSAN_OPTIONS=suppressions=$(SUPP)/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	CTESTS="build/asan/test_*" BUSTED="build/asan/poolrt /usr/bin/busted" \
	tools/with-pg.sh tools/run-tests.sh

sanitize-tsan: deps-sanitize
	$(MAKE) BUILD=build/tsan CC=clang OPT="$(TSAN_FLAGS)" LDFLAGS="-fsanitize=thread" all
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(SUPP)/tsan.supp \
	CTESTS="build/tsan/test_*" BUSTED="build/tsan/poolrt /usr/bin/busted" SPECS="$(THREADED_SPECS)" \
	tools/with-pg.sh tools/run-tests.sh

valgrind: deps-sanitize all
	CTESTS="build/test_*" SPECS= VALGRIND="valgrind -q --error-exitcode=99 --leak-check=full \
	  --errors-for-leak-kinds=definite --show-leak-kinds=definite --suppressions=$(SUPP)/valgrind.supp" \
	tools/with-pg.sh tools/run-tests.sh
