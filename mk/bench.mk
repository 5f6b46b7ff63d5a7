# bench -- side-by-side benchmarks (bench/run.sh writes bench/RESULTS.md and
# bench/chart.png).  Not part of `make test`; needs root or the bench
# packages already installed (tools/deps.sh core bench).
.PHONY: bench bench-bin bench-budget bench-surface bench-handoff bench-sim bench-cpu bench-mux

BENCH_BIN := $(BUILD)/bench/driver $(BUILD)/bench/relay $(BUILD)/bench/sim_speed

# The whole set within 20 minutes: bench/run.sh (~11 min at 2 rounds of 4 s;
# its matrix includes multiplex = true at 32 and 128 workers), then the
# focused ones below with fewer rounds or shorter runs (~6 min, bench-sim
# included; bench-cpu and bench-mux repeat what the matrix measures and stay
# separate).  Repetitions and run lengths were cut to fit, never
# comparisons (the whole set measured 19.5 min before these cuts, without
# bench-sim); each target alone keeps its own defaults.
bench:
	BENCH_SECS=4 bench/run.sh
	$(MAKE) bench-budget bench-handoff bench-surface bench-sim BUDGET_ROUNDS=5 HANDOFF_ROUNDS=4 HANDOFF_SECS=1 \
	  SURFACE_ROUNDS=2 SURFACE_SELECT_ROUNDS=5 SURFACE_LOAD_ROWS=500000 SURFACE_INSERT_ROWS=500000

# `poolrt sim` (issue 13): simulated acquires per wall second with a Lua
# pick and an hour of 2,000 acquires/s, then acquire + release of this tree
# against d17cf01 (before the refactor; its library is built once into
# $(BUILD)/bench/tree-d17cf01); writes bench/RESULTS-sim.md.  ~1 min on a quiet
# machine (plus ~30 s the first time, building d17cf01).
bench-sim: deps all bench-bin
	tools/with-pg.sh bench/sim.sh

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

# Client CPU per transaction at W = 128 (issue 14, item 3): pgbench, the C
# driver, the control and the Lua host side by side (~2 min); writes
# bench/RESULTS-cpu.md.
bench-cpu: deps all bench-bin
	tools/with-pg.sh bench/cpu_cost.sh

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

# `poolrt sim`'s speed (issue 13): simulated acquires per wall second with a
# Lua pick; no database needed.  build/bench/sim_speed [POLICY] [SEED]
$(BUILD)/bench/sim_speed: bench/sim_speed.c include/poolrt.h $(BUILD)/libpoolrt.a | $(BUILD)/bench
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libpoolrt.a $(LDFLAGS) $(LDLIBS)
