#!/usr/bin/env bash
# What a request costs end to end, inside a real axum server: every mode of
# examples/bench_server.rs measured two ways in one run.
#
#   1. Instructions per request (user space) under callgrind: start the server under
#      valgrind, warm up, zero the counters (callgrind_control -z), send a fixed number of
#      keep-alive requests from one client, dump (callgrind_control -d), divide the dump's
#      total by the requests sent. These counts repeat to within a fraction of a percent.
#   2. Requests per second under wrk: server pinned to core 0, wrk to core 1, every mode once
#      per round, rounds interleaved; each mode's ratio to `bare` is taken within its round,
#      and the table gives the median over the rounds.
#
# Usage: scripts/e2e_cost.sh [--quick] [--no-wrk] [--annotate MODE] [MODE ...]
#   --quick        fewer requests and one short wrk round (a smoke run, as CI does)
#   --no-wrk       callgrind only
#   --annotate M   also write callgrind_annotate's per-function and per-line report of mode
#                  M to target/release/e2e/annotate-M.txt (where the instructions go)
#   MODE ...       only these modes (default: all; `bench_server --list` names them)
# Env: E2E_REQUESTS (default 5000), E2E_WARMUP (500), E2E_ROUNDS (3), E2E_SECONDS (4),
#      E2E_CONNECTIONS (32), E2E_PORT (default: a free port, the same for every callgrind run),
#      E2E_FEATURES (cargo's feature flags for the server; default `--features axum`. Without
#      this crate's `compression` feature, flate2 keeps its default backend, miniz_oxide: the
#      tower-http-* modes as tower-http's users get them. With it, feature unification gives
#      tower-http zlib-rs too.)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0 wrk_on=1 annotate="" modes=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --no-wrk) wrk_on=0 ;;
    --annotate) annotate="${2:?--annotate needs a mode}"; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) modes+=("$1") ;;
  esac
  shift
done
requests=${E2E_REQUESTS:-5000} warmup=${E2E_WARMUP:-500}
rounds=${E2E_ROUNDS:-3} seconds=${E2E_SECONDS:-4} connections=${E2E_CONNECTIONS:-32}
if [ "$quick" = 1 ]; then
  requests=${E2E_REQUESTS:-500} warmup=${E2E_WARMUP:-100} rounds=1 seconds=1
fi

# -- tools ---------------------------------------------------------------------------------
need=()
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
[ "$wrk_on" = 1 ] && { command -v wrk >/dev/null 2>&1 || need+=(wrk); }
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || { echo "install ${need[*]} first" >&2; exit 1; }
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

# -- build: optimised, with line tables for callgrind_annotate ------------------------------
# The binary's path comes from cargo itself, so any CARGO_TARGET_DIR works.
server=$(CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
  cargo build --release --example bench_server ${E2E_FEATURES:---features axum} --message-format=json-render-diagnostics \
  | python3 -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "bench_server" and msg.get("executable"):
        print(msg["executable"])
')
[ -x "$server" ] || { echo "bench_server was not built" >&2; exit 1; }
out=$(dirname "$(dirname "$server")")/e2e   # target/<profile>/.. -> target/release/e2e
mkdir -p "$out"
if [ ${#modes[@]} -eq 0 ]; then
  mapfile -t modes < <("$server" --list | cut -d'|' -f1)
fi
declare -A baseline_of what_of
while IFS='|' read -r name baseline what; do
  baseline_of[$name]=$baseline; what_of[$name]=$what
done < <("$server" --list)

# A keep-alive client that sends N requests on one connection and reports the statuses.
client() { # port count
  python3 - "$1" "$2" <<'PY'
import collections, http.client, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
statuses = collections.Counter()
for _ in range(count):
    # Accept-Encoding as a browser sends it: the compression mode compresses, others ignore it.
    conn.request("GET", "/json", headers={"Accept-Encoding": "gzip"})
    res = conn.getresponse()
    res.read()
    statuses[res.status] += 1
print(" ".join(f"{s}x{n}" for s, n in sorted(statuses.items())))
PY
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts "$@" in the background, waits for its `ready` line; sets $pid.
start_server() {
  local log=$1; shift
  "$@" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    grep -q '^ready' "$log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; return 1; }
    sleep 0.05
  done
  echo "server did not start: $*" >&2; cat "$log" >&2; return 1
}
stop_server() { kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; }
pid=""
# A server left running by a failed step would hold its port: stop it whatever happens.
trap '[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; true' EXIT

# -- 1. instructions per request ------------------------------------------------------------
declare -A instr statuses
echo "== callgrind: $warmup warm-up requests, then $requests counted, per mode"
# One port for every mode (each server is stopped before the next starts): the port is part
# of the server's command line and environment, whose length shifts its stack, and so its
# counts, by a few dozen instructions from one port to another.
cg_port=${E2E_PORT:-$(free_port)}
for mode in "${modes[@]}"; do
  port=$cg_port
  rm -f "$out"/cg."$mode".*
  start_server "$out/cg-$mode.log" valgrind --tool=callgrind --collect-jumps=no \
    --callgrind-out-file="$out/cg.$mode.%p" "$server" "$mode" "127.0.0.1:$port"
  client "$port" "$warmup" >/dev/null
  # callgrind_control talks to the server through vgdb (ptrace): bounded, errors shown.
  timeout 60 callgrind_control -z "$pid" >/dev/null 2>&1 || { echo "callgrind_control -z failed for $mode" >&2; exit 1; }
  statuses[$mode]=$(client "$port" "$requests")
  timeout 60 callgrind_control -d "$pid" >/dev/null 2>&1 || { echo "callgrind_control -d failed for $mode" >&2; exit 1; }
  stop_server
  # Every request must have had the mode's answer: 2xx, or the refusal a refusing mode gives.
  case "$mode" in
    *-refused) want=429 ;;
    *-open) want=503 ;;
    *-304) want=304 ;;
    *) want=200 ;;
  esac
  # (A refusing mode may admit one request when its minute comes round on a slow machine.)
  if ! grep -qE "(^| )${want}x($requests|$(( requests - 1 )))( |\$)" <<<"${statuses[$mode]}"; then
    echo "mode $mode answered ${statuses[$mode]}, not ${want}x$requests" >&2; exit 1
  fi
  # The dump made by -d is the first numbered part; its `totals:` line is the instructions
  # since the counters were zeroed.
  dump=$(find "$out" -name "cg.$mode.*.1" | head -1)
  [ -f "$dump" ] || { echo "no callgrind dump for mode $mode in $out" >&2; exit 1; }
  total=$(awk '/^(totals|summary):/ {print $2; exit}' "$dump")
  [ -n "$total" ] || { echo "no total in $dump" >&2; exit 1; }
  instr[$mode]=$(( total / requests ))
  printf '  %-24s %8s instr/request  (%s)\n' "$mode" "${instr[$mode]}" "${statuses[$mode]}"
  if [ "$mode" = "$annotate" ]; then
    callgrind_annotate --auto=yes --inclusive=no "$dump" >"$out/annotate-$mode.txt" 2>/dev/null || true
    callgrind_annotate --inclusive=yes "$dump" >"$out/annotate-$mode-inclusive.txt" 2>/dev/null || true
    echo "  annotated: $out/annotate-$mode.txt"
  fi
done

# -- 2. requests per second -----------------------------------------------------------------
declare -A ratios rps faults
# The server's minor page faults so far (field 10 of /proc/PID/stat, counted after the
# command name, which may hold spaces): per response, what the allocator's trimming costs.
minor_faults() { python3 -c "import sys; print(open(f'/proc/{sys.argv[1]}/stat').read().rsplit(')', 1)[1].split()[7])" "$1"; }
if [ "$wrk_on" = 1 ]; then
  echo "== wrk: $rounds round(s) of ${seconds}s per mode, $connections connections, server on core 0, wrk on core 1"
  cpus=$(nproc)
  pin_server=(); pin_wrk=()
  if [ "$cpus" -ge 2 ]; then pin_server=(taskset -c 0); pin_wrk=(taskset -c 1); fi
  wrk_modes=("${modes[@]}")
  case " ${wrk_modes[*]} " in *" bare "*) ;; *) wrk_modes=(bare "${wrk_modes[@]}") ;; esac
  for round in $(seq "$rounds"); do
    declare -A this=()
    for mode in "${wrk_modes[@]}"; do
      port=$(free_port)
      start_server "$out/wrk-$mode.log" "${pin_server[@]}" "$server" "$mode" "127.0.0.1:$port"
      "${pin_wrk[@]}" wrk -t1 -c"$connections" -d1s -H 'Accept-Encoding: gzip' "http://127.0.0.1:$port/json" >/dev/null # warm-up
      faults_before=$(minor_faults "$pid")
      report=$("${pin_wrk[@]}" wrk -t1 -c"$connections" -d"${seconds}s" -H 'Accept-Encoding: gzip' "http://127.0.0.1:$port/json")
      faults_after=$(minor_faults "$pid")
      this[$mode]=$(awk '/^Requests\/sec:/ {print $2}' <<<"$report")
      answered=$(awk '/requests in/ {print $1}' <<<"$report")
      faults[$mode]+="$(python3 -c "print(f'{($faults_after - $faults_before) / max($answered, 1):.2f}')") "
      stop_server
      [ -n "${this[$mode]}" ] || { echo "wrk gave no figure for mode $mode" >&2; exit 1; }
    done
    for mode in "${wrk_modes[@]}"; do
      rps[$mode]+="${this[$mode]} "
      ratios[$mode]+="$(python3 -c "print(f'{${this[$mode]}/${this[bare]}:.3f}')") "
    done
    echo "  round $round: $(for m in "${wrk_modes[@]}"; do printf '%s=%.0f ' "$m" "${this[$m]}"; done)"
  done
fi

median() { python3 -c 'import statistics,sys; v=[float(x) for x in sys.argv[1:]]; print(statistics.median(v) if v else "")' $1; }

# -- the table ------------------------------------------------------------------------------
echo
echo "| mode | what | instructions / request | over its baseline | req/s (median) | ratio to bare (median) | page faults / response (median) |"
echo "|---|---|---:|---:|---:|---:|---:|"
for mode in "${modes[@]}"; do
  base=${baseline_of[$mode]}
  over=""
  if [ -n "$base" ] && [ -n "${instr[$base]:-}" ]; then
    over=$(printf '%+d (over %s)' $(( instr[$mode] - instr[$base] )) "$base")
  fi
  r="" q="" f=""
  if [ "$wrk_on" = 1 ]; then
    r=$(printf '%.0f' "$(median "${rps[$mode]}")"); q=$(median "${ratios[$mode]}")
    f=$(median "${faults[$mode]}")
  fi
  echo "| \`$mode\` | ${what_of[$mode]} | ${instr[$mode]} | $over | $r | $q | $f |"
done
