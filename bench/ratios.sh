# bench/ratios.sh -- sourced by the benchmark scripts (run.sh,
# budget_cost.sh, query_surface.sh, cpu_cost.sh): the order of a round's
# runs, and a table and a verdict from rows "round a b" (a and b measured
# back to back in one round), judged on the median of the per-round a / b,
# so drift on this shared machine hits both sides of a round alike.

# round_order ROUND ITEM...: sets ORDER to the items, reversed on even
# rounds (A B C ... then ... C B A): each configuration's average position
# in the sequence is the same, so a drift of the machine favours nobody.
round_order() {
  local r=$1 i
  shift
  ORDER=("$@")
  if [ $((r % 2)) -eq 0 ]; then
    ORDER=()
    for ((i = $#; i >= 1; i--)); do ORDER+=("${!i}"); done
  fi
}

# Markdown rows "| round | a | b | a/b |" from rows "round a b" on stdin.
ratio_table() { awk '{ printf "| %d | %.0f | %.0f | %.3f |\n", $1, $2, $3, ($3 > 0 ? $2 / $3 : 0) }'; }

# ratio_verdict WHAT [TARGET]: "- WHAT: median m over n rounds (min, max)",
# and with TARGET "-- target >= TARGET met" (or MISSED), from rows on stdin.
ratio_verdict() {
  awk '$3 > 0 { print $2 / $3 }' | sort -n | awk -v what="$1" -v target="${2:-}" '{ v[NR] = $1 } END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "- %s: median %.3f over %d rounds (min %.3f, max %.3f)", what, m, NR, v[1], v[NR]
    if (target != "") printf " -- target >= %s %s", target, (m >= target ? "met" : "MISSED")
    printf "\n" }'
}
