-- bench/report/summary.lua -- the frame of the generated part: title and
-- machine, the verdict table of every target, links to the other results
-- and the exact commands.
local fmt = require("report.fmt")
local verdict = require("report.verdict")
local M = {}

local MACHINE = { "cpu", "nproc", "ram", "os", "server", "postgresql", "pgbench", "libpq", "poolrt",
                  "luajit", "pgbouncer", "go", "lib/pq", "pgx", "gcc", "valgrind", "gnuplot" }

function M.header(doc, run)
  local m = run.meta
  doc:p("# poolrt benchmarks: side by side, one run")
  doc:p("")
  doc:p("Recorded by `make bench` (`bench/run.sh`) on %s, poolrt at %s; `make bench` took **%s s**",
    m.date or "?", m.git or "?", m.elapsed or "?")
  doc:p("end to end. Raw rows: [`raw/results.tsv`](raw/results.tsv). Chart: [`chart.png`](chart.png).")
  doc:p("")
  doc:p("Each matrix run lasts **%s s**; %s rounds are interleaved: at each worker count every",
    run.secs or "?", m.reps or "?")
  doc:p("configuration runs once in order, then once in reverse order (A B C … C B A …), so a slow phase")
  doc:p("of the machine hits every contender alike. Figures are the mean of the rounds; ratios are ratios")
  doc:p("of those means, with the range of the per-round ratios in brackets.")
  doc:p("")
  doc:p("## Machine and versions")
  doc:p("")
  local rows = {}
  for _, k in ipairs(MACHINE) do rows[#rows + 1] = { k, m[k] or "?" } end
  doc:table({ "", "" }, "ll", rows)
  doc:p("All clients, servers and helpers ran on this one machine, over loopback TCP: the clients compete")
  doc:p("with PostgreSQL for the same %s cores, so a client's own CPU per transaction is taken away from",
    m.nproc or "?")
  doc:p("the server.")
  doc:p("")
end

function M.verdicts(doc, targets, results)
  doc:p("## 7. Verdicts")
  doc:p("")
  local rows = {}
  for i, e in ipairs(targets) do
    if e.cmp then
      rows[#rows + 1] = { e.label, verdict.threshold(e), verdict.worst(e, results[i]), results[i].verdict, e.source }
    end
  end
  doc:table({ "target", "threshold", "worst measured", "verdict", "set by" }, "llrll", rows)
end

function M.others(doc)
  doc:p("## Other benchmarks")
  doc:p("")
  doc:p("Measured by their own targets, side by side within each run:")
  doc:p("")
  doc:p("- [RESULTS-policy.md](RESULTS-policy.md) (`make bench-policy`, `make bench-reload`): what a Lua")
  doc:p("  `pick` costs against the built-in one through the real policy engine, what the step budget")
  doc:p("  costs, and hot reload: switch latency and throughput during reload storms.")
  doc:p("- [RESULTS-nginx.md](RESULTS-nginx.md) (`make bench-nginx`): nginx + `resty.poolrt` against")
  doc:p("  `pgbench` direct on the same one-row query with the same number of server connections.")
  doc:p("- [RESULTS-mux.md](RESULTS-mux.md) (`make bench-mux`): multiplexed queries, 128 workers on 8")
  doc:p("  connections with `multiplex = true` against `pgbench -M prepared -c 128` and pgxpool max = 8, with")
  doc:p("  client CPU per transaction (the matrix above runs the same configurations at 32 and 128 workers).")
  doc:p("")
end

-- The recorded command lines, and the set-up bench/run.sh does not record.
function M.commands(doc, run)
  doc:p("## Exact commands")
  doc:p("")
  doc:p("`$CONN` = `host=127.0.0.1 port=<PGPORT> user=postgres dbname=postgres`; `$TMP` = the run's temp dir.")
  doc:p("Server: `tools/pg.sh start` (initdb, loopback, fsync off), then `pg_ctl restart` with the options")
  doc:p("in the server row above, `pgbench -i -s 10 -q $CONN` and a short pgbench warm-up (bench/run.sh).")
  doc:p("One line per configuration, as first run (W, max, rounds vary):")
  doc:p("")
  doc:p("```")
  for _, k in ipairs(run.cmd_order) do doc:p("%-24s %s", k, run.cmds[k]) end
  doc:p("```")
  doc:p("")
  doc:p("Go clients built offline from Debian's packages: `GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off")
  doc:p("go build -o build/bench/gobench bench/go/gobench.go`%s.",
    run.meta.go_ok == "1" and "" or " — **this failed in this run, so the Go rows are missing**")
  local bouncer = run:one("matrix", "pgbouncer_extended", run.workers[1])
  doc:p("PgBouncer config (`pgbouncer -u postgres pgbouncer.ini`): `pool_mode = transaction`,")
  doc:p("`default_pool_size = %s`, `listen_addr = 127.0.0.1`, `auth_type = trust`, `max_client_conn = 400`.",
    bouncer and bouncer.max or "?")
  doc:p("")
end

return M
