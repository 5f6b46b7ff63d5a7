# bench -- side-by-side benchmarks (bench/run.sh writes bench/RESULTS.md and
# bench/chart.png).  Not part of `make test`; needs root or the bench
# packages already installed (tools/deps.sh core bench).
.PHONY: bench bench-bin bench-budget bench-surface bench-handoff bench-mux

BENCH_BIN := $(BUILD)/bench/driver $(BUILD)/bench/relay

# The whole set within 20 minutes: bench/run.sh (~13 min at 2 rounds; its
# matrix includes multiplex = true at 32 and 128 workers), then the focused
# ones below with fewer rounds (~6 min).  Repetitions were dropped to fit,
# never comparisons; each target alone keeps its own default rounds.
bench:
	bench/run.sh
	$(MAKE) bench-budget bench-handoff bench-surface HANDOFF_ROUNDS=2 SURFACE_ROUNDS=2

# The connection budget's cost per acquire + release (issue 12); writes
# bench/RESULTS-budget.md.
bench-budget: deps all bench-bin
	tools/with-pg.sh bench/budget_cost.sh

# COPY against INSERTs and typed rows against decode = false (issue 15);
# writes bench/RESULTS-surface.md.
bench-surface: deps all
	tools/with-pg.sh bench/query_surface.sh

# The contended hand-off (issue 14): poolrt's `handoff` modes vs pgxpool
# and database/sql, T = 8 and 32 on 4 connections; writes
# bench/RESULTS-handoff.md.
bench-handoff: deps all bench-bin
	tools/with-pg.sh bench/handoff.sh

# Multiplexed queries (issue 14): 128 workers on 8 connections with
# multiplex = true vs pgbench -M prepared direct and pgxpool max = 8; writes
# bench/RESULTS-mux.md (about 1 minute).
bench-mux: deps all bench-bin
	POOLRT_PG_MAX_CONNECTIONS=300 tools/with-pg.sh bench/mux.sh

bench-bin: $(BENCH_BIN)

$(BUILD)/bench:
	mkdir -p $@

# Linked statically against the core so it runs without LD_LIBRARY_PATH.
$(BUILD)/bench/driver: bench/driver.c include/poolrt.h $(BUILD)/libpoolrt.a | $(BUILD)/bench
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libpoolrt.a $(LDFLAGS) $(LDLIBS)

$(BUILD)/bench/relay: bench/relay.c | $(BUILD)/bench
	$(CC) -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -Werror -pthread -o $@ $< -pthread
