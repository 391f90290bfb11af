#!/usr/bin/env bash
# Checks that certgate's memory stays flat over millions of keep-alive requests.
#
#   bench/soak.sh [--duration S] [--connections N]     (default 120 s, 64 connections)
#
# Runs the benchmark's certgate config under certgate-bench keep-alive load for S seconds
# (reconnecting each connection every 10 s, so connection setup and teardown are exercised
# too), samples the gateway's resident memory (VmRSS) every 10 s, and prints the samples, the
# number of requests served, and the growth from the first sample after warm-up to the last.
# Fails when the last sample exceeds the first by more than 10%.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=120
CONNECTIONS=64
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift ;;
    --connections) CONNECTIONS=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

. "$ROOT/bench/common.sh"
build_bins release
make_workdir certgate-soak
make_pki
start_upstream
CG_PORT=$(free_port)
NG_PORT=0
write_certgate_config > "$W/certgate.toml"
"$CERTGATE" serve --config "$W/certgate.toml" 2>"$W/certgate.log" &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_port "$CG_PORT"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }

# Load in 10 s slices: each slice opens fresh connections.
slices=$(( (DURATION + 9) / 10 ))
total=0
samples=()
for i in $(seq 1 "$slices"); do
  "$LOADGEN" keepalive --addr "127.0.0.1:$CG_PORT" --cert "$W/client.crt" --key "$W/client.key" \
    --no-verify-server --connections "$CONNECTIONS" --duration 10 > "$W/slice.json"
  done_now=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["completed"], r["errors"])' "$W/slice.json")
  total=$((total + ${done_now% *}))
  rss=$(rss_kib)
  samples+=("$rss")
  printf '  after %4d s: %9d requests, errors %s, VmRSS %6.1f MiB\n' $((i * 10)) "$total" "${done_now#* }" "$(awk -v r="$rss" 'BEGIN { printf "%.1f", r / 1024 }')"
done

first=${samples[0]}
last=${samples[-1]}
growth=$(python3 -c "print(f'{($last - $first) / $first * 100:+.1f}')")
echo "requests: $total; VmRSS first slice $((first / 1024)) MiB, last $((last / 1024)) MiB ($growth%)"
python3 -c "import sys; sys.exit(0 if $last <= $first * 1.10 else 1)" || {
  echo "memory grew by more than 10%" >&2; exit 1; }
