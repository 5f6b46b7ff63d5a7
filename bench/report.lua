-- bench/report.lua -- turns one run's raw rows into the generated part of
-- bench/RESULTS.md and the data files for bench/chart.gp.  Run by
-- bench/run.sh with plain luajit, or by hand to re-render from bench/raw:
--
--   luajit bench/report.lua META.tsv RESULTS.tsv COMMANDS.txt OUT.md CHARTDIR
--
-- Every number, table and verdict is computed from the rows (targets are
-- data, in bench/report/targets.lua).  OUT.md keeps everything outside its
-- generated markers, where the dated, hand-written analysis lives.
local meta_path, res_path, cmd_path, out_path, chart_dir = ...
assert(chart_dir, "usage: luajit bench/report.lua META RESULTS COMMANDS OUT.md CHARTDIR")

local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path

local data = require("report.data")
local fmt = require("report.fmt")
local verdict = require("report.verdict")
local targets = require("report.targets")
local summary = require("report.summary")
local matrix = require("report.matrix")
local extras = require("report.extras")

local run = data.load(meta_path, res_path, cmd_path)

local results = {}
for i, e in ipairs(targets) do results[i] = verdict.evaluate(run, e) end
local function find(id)
  for i, e in ipairs(targets) do if e.id == id then return e, results[i] end end
  error("no target " .. id)
end

local doc = fmt.doc()
summary.header(doc, run)
matrix.throughput(doc, run)
matrix.ratios(doc, run, targets, results)
matrix.cpu(doc, run)
matrix.decomposition(doc, run)
extras.conns250(doc, run)
extras.micro(doc, run, find)
extras.replica(doc, run)
extras.spike(doc, run)
summary.verdicts(doc, targets, results)
summary.others(doc)
summary.commands(doc, run)

require("report.merge").write(out_path, doc:text())
require("report.chart").write(run, chart_dir)
