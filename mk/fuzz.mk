# Fuzzing the policy boundary with libFuzzer (clang): `make fuzz`, bounded
# by FUZZ_SECONDS.  Findings (crash-*, timeout-*) land in build/fuzz/.
FUZZ_SECONDS ?= 60
FUZZ_SAN := -fsanitize=address,undefined

.PHONY: fuzz
fuzz: deps-sanitize
	$(MAKE) BUILD=build/fuzz CC=clang OPT="-O1 -g -fsanitize=fuzzer-no-link $(FUZZ_SAN)" build/fuzz/libpoolrt.a
	clang -std=c11 -D_POSIX_C_SOURCE=200809L -O1 -g -fsanitize=fuzzer $(FUZZ_SAN) -Iinclude -Isrc -Ibuild/fuzz/gen \
	  $(DEPS_CFLAGS) -o build/fuzz/fuzz_policy tests/fuzz_policy.c build/fuzz/libpoolrt.a $(DEPS_LIBS) -lm -pthread
	mkdir -p build/fuzz/corpus
	cd build/fuzz && ./fuzz_policy -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 \
	  corpus ../../tests/fuzz_corpus
