#!/usr/bin/env bash
# The file -> file call graph of the built library, and its circles.
#   tools/calls.sh [--symbols] [--check FILE...]
#   BUILD=build/asan tools/calls.sh      (default BUILD=build)
#
# Read from the objects, not the sources: for every $BUILD/obj/**/*.o whose
# source src/**/NAME.c exists (the library; host/ objects and objects whose
# source is gone are skipped and named), `nm` gives the global symbols it
# defines (T D B R ...) and the ones it uses (U).  A -> B when A uses a
# symbol that B defines.  Then the strongly connected components of more
# than one file, each printed as "circle: a -> b -> ... -> a", a closed walk
# along real arrows that visits every file of the component.
#
# What nm cannot see:
#   - static inline functions in headers: compiled into each caller, so a
#     call through one is an arrow from the caller to nowhere;
#   - calls through function pointers: listed beside the graph from the
#     comments in src/ tagged `/* callback: NAME -- registered by X, called
#     by Y */`.
# An arrow can also be a use of another file's global variable (D/B/R).
#
# Output: one line per file with its outgoing arrows, the circles, the
# callbacks, and last "N files, N arrows, N circles".  Exit 0 (a report),
# except with --check FILE...: exit 1 when a circle contains one of them,
# 2 when one of them is not in the build (a typo must not pass).
#   --symbols   after each circle, the symbols behind each of its arrows
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
symbols=0 checks=()
while [ "$#" -gt 0 ]; do
  case $1 in
    --symbols) symbols=1; shift ;;
    --check) shift; [ "$#" -gt 0 ] || { echo "calls.sh: --check needs at least one FILE" >&2; exit 2; }
             checks=("$@"); break ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "calls.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

[ -d "$BUILD/obj" ] || { echo "calls.sh: no $BUILD/obj (run make -j2 first, or set BUILD)" >&2; exit 2; }

# "D FILE SYM" / "U FILE SYM" records for every library object; "S OBJ" for skipped ones.
records() {
  local o rel objs=()
  while IFS= read -r o; do
    rel=${o#"$BUILD"/obj/}
    if [ -f "src/${rel%.o}.c" ]; then objs+=("$o"); else echo "S $o"; fi
  done < <(find "$BUILD/obj" -name '*.o' | LC_ALL=C sort)
  [ "${#objs[@]}" -gt 0 ] || return 0
  # nm -A -P: "OBJ: name type [value size]".  U (and w/v, weak undefined) =
  # used; other lowercase types are file-local; other uppercase = defined.
  nm -A -P "${objs[@]}" | awk -v obj="$BUILD/obj/" '
    { f = $1; sub(/:$/, "", f); f = "src/" substr(f, length(obj) + 1); sub(/\.o$/, ".c", f) }
    $3 == "U" || $3 == "w" || $3 == "v" { print "U", f, $2; next }
    $3 ~ /^[A-Z]$/ { print "D", f, $2 }'
}

# Registered callbacks, "FILE:LINE: NAME -- registered by X, called by Y".
callbacks() {
  grep -rn --include='*.[ch]' 'callback:' src/ 2>/dev/null |
    sed -E 's/^([^:]+:[0-9]+):.*callback:[[:space:]]*/\1: /; s/[[:space:]]*\*\/.*$//' | LC_ALL=C sort -t: -k1,1 -k2,2n || true
}

cb=$(callbacks)

# Multi-line values go through the environment (awk -v would read escapes).
records | CALLS_CB=$cb CALLS_CHECK=${checks[*]:-} awk -v symbols="$symbols" '
function add_node(f) { if (!(f in id)) { id[f] = ++n; name[n] = f } }
# Tarjan: components numbered in ncomp, comp[v] = its number.
function connect(v,   k, w) {
  idx[v] = low[v] = ++counter
  stack[++sp] = v; onstack[v] = 1
  for (k = 1; k <= nadj[v]; k++) {
    w = adj[v, k]
    if (!(w in idx)) { connect(w); if (low[w] < low[v]) low[v] = low[w] }
    else if (onstack[w] && idx[w] < low[v]) low[v] = idx[w]
  }
  if (low[v] == idx[v]) {
    ncomp++
    do { w = stack[sp--]; onstack[w] = 0; comp[w] = ncomp; size[ncomp]++ } while (w != v)
  }
}
# Shortest path from s to the nearest node of component c for which
# want(node) holds (want: not yet visited, or == target), inside c;
# appends it to walk (without s).  Returns the node reached.
function hop(s, c, target,   head, tail, q, k, v, w, found, npath, i) {
  delete prev; delete seen
  head = tail = 1; q[1] = s; seen[s] = 1; found = 0
  while (head <= tail && !found) {
    v = q[head++]
    for (k = 1; k <= nadj[v]; k++) {
      w = adj[v, k]
      if (comp[w] != c || (w in seen)) continue
      seen[w] = 1; prev[w] = v; q[++tail] = w
      if ((target && w == target) || (!target && !(w in visited))) { found = w; break }
    }
  }
  npath = 0
  for (v = found; v != s; v = prev[v]) path[++npath] = v
  for (i = npath; i >= 1; i--) { walk[++nwalk] = path[i]; visited[path[i]] = 1 }
  return found
}
$1 == "S" { skipped = skipped (skipped == "" ? "" : " ") $2; next }
$1 == "D" { add_node($2); d = ($3 in def) ? def[$3] SUBSEP $2 : $2; def[$3] = d; next }
$1 == "U" { add_node($2); nuse++; use_f[nuse] = $2; use_s[nuse] = $3 }
END {
  cb = ENVIRON["CALLS_CB"]; checks = ENVIRON["CALLS_CHECK"]
  for (i = 1; i <= nuse; i++) {
    if (!(use_s[i] in def)) continue      # libc, libpq, luajit ...
    m = split(def[use_s[i]], to, SUBSEP)
    for (j = 1; j <= m; j++) {
      a = id[use_f[i]]; b = id[to[j]]
      if (a == b) continue
      # (mawk creates edge[a, b] before it reads the right-hand side)
      if ((a, b) in edge) e = edge[a, b] " " use_s[i]
      else { e = use_s[i]; narrows++ }
      edge[a, b] = e
    }
  }
  # Nodes were numbered in sorted order (sorted input), so arrows come out sorted.
  for (a = 1; a <= n; a++) {
    line = name[a] " ->"
    for (b = 1; b <= n; b++) if ((a, b) in edge) { adj[a, ++nadj[a]] = b; line = line " " name[b] }
    print line
  }
  for (v = 1; v <= n; v++) if (!(v in idx)) connect(v)

  print ""
  ncircles = 0
  for (c = 1; c <= ncomp; c++) {
    if (size[c] < 2) continue
    ncircles++
    start = 0
    for (v = 1; v <= n; v++) if (comp[v] == c) { start = v; break }
    delete visited; nwalk = 1; walk[1] = start; visited[start] = 1; cur = start
    for (left = size[c] - 1; left > 0; ) {
      cur = hop(cur, c, 0)
      left = 0
      for (v = 1; v <= n; v++) if (comp[v] == c && !(v in visited)) left++
    }
    hop(cur, c, start)   # and back: a circle closes
    line = "circle: " name[walk[1]]
    for (i = 2; i <= nwalk; i++) line = line " -> " name[walk[i]]
    print line
    members = ""
    for (v = 1; v <= n; v++) if (comp[v] == c) { members = members " " name[v]; incircle[name[v]] = 1 }
    print "  its " size[c] " files:" members
    if (symbols == 1)
      for (i = 1; i < nwalk; i++)
        print "  " name[walk[i]] " -> " name[walk[i + 1]] ": " edge[walk[i], walk[i + 1]]
  }
  if (ncircles == 0) print "no circles"

  print ""
  print "callbacks (calls through function pointers; nm cannot see them):"
  if (cb == "") print "  none tagged: no `/* callback: NAME -- registered by X, called by Y */` comment in src/"
  else { m = split(cb, lines, "\n"); for (i = 1; i <= m; i++) print "  " lines[i] }
  print "not seen: static inline functions in headers (compiled into each caller), calls through function pointers"
  if (skipped != "") print "skipped (no src/ source: host binary or stale): " skipped
  print n " files, " narrows + 0 " arrows, " ncircles " circles"

  status = 0
  if (checks != "") {
    m = split(checks, want, " ")
    for (i = 1; i <= m; i++) {
      f = want[i]
      if (!(f in id) && (("src/" f) in id)) f = "src/" f
      if (!(f in id)) { print "check: " want[i] " is not in the build (" n " files under src/)"; unknown = 1; continue }
      if (f in incircle) { print "check: " f " is in a circle"; status = 1 }
      else print "check: " f " is in no circle"
    }
    if (status == 0 && unknown) status = 2
  }
  exit status
}'
