#!/usr/bin/env bash
# Reload soak: keep-alive and handshake load through certgate while it reloads every 100 ms,
# with its server certificate and its CRL changing on disk. Not a timed test.
#
#   bench/reload_soak.sh [--duration S] [--connections N] [--profile P]
#                        (default 60 s per load mode, 32 connections, release)
#
# A reloader loop alternates two server certificates and republishes the CRL (as renewals
# and CRL publication do), writing each by rename, and sends SIGHUP every 100 ms. Reports the
# requests and handshakes served and failed, the reloads done and their latency (median and
# p99 of the gateway's own "took_ms"), and VmRSS at the start and the end of each phase.
# Fails on any failed request or handshake, or when VmRSS at the end is more than 10% above
# its level after the first phase (the first phase warms up under reloads).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=60
CONNECTIONS=32
PROFILE=release
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift ;;
    --connections) CONNECTIONS=$2; shift ;;
    --profile) PROFILE=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

. "$ROOT/bench/common.sh"
build_bins "$PROFILE"
make_workdir certgate-reload-soak
make_pki
start_upstream
CG_PORT=$(free_port)
NG_PORT=0
# A second server certificate to alternate with, and a CRL the CA republishes.
"$CERTGATE" cert issue server2 --san localhost --san 127.0.0.1 --out-dir "$W" --ca-dir "$W/ca" \
  >/dev/null
cp "$W/server.crt" "$W/server1.crt"; cp "$W/server.key" "$W/server1.key"
"$CERTGATE" crl --ca-dir "$W/ca" --next-update 7d >/dev/null
write_certgate_config | sed "s|max_chain_depth = 2|max_chain_depth = 2\ncrls = [\"$W/ca/crl.pem\"]|" \
  > "$W/certgate.toml"
CERTGATE_LOG=info "$CERTGATE" serve --config "$W/certgate.toml" 2>"$W/certgate.log" &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_port "$CG_PORT"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }

# Warm up pools, caches and the allocator, so memory is compared in steady state.
"$LOADGEN" keepalive --addr "127.0.0.1:$CG_PORT" --cert "$W/client.crt" --key "$W/client.key" \
  --no-verify-server --connections "$CONNECTIONS" --duration 2 >/dev/null

reloader() {
  local i=0
  while kill -0 "$SERVER_PID" 2>/dev/null; do
    i=$((i + 1))
    local n=$(( i % 2 + 1 ))
    # Files replaced by rename, as renewals and `certgate crl` write them.
    cp "$W/server$n.crt" "$W/server.crt.tmp" && mv "$W/server.crt.tmp" "$W/server.crt"
    cp "$W/server$n.key" "$W/server.key.tmp" && mv "$W/server.key.tmp" "$W/server.key"
    if [ $((i % 10)) -eq 0 ]; then
      "$CERTGATE" crl --ca-dir "$W/ca" --next-update 7d >/dev/null 2>&1 || true
    fi
    kill -HUP "$SERVER_PID" 2>/dev/null || true
    sleep 0.1
  done
}

status=0
settled=""
for mode in keepalive handshake; do
  before=$(rss_kib)
  reloads_before=$(grep -c "reloaded: serving generation" "$W/certgate.log" || true)
  reloader & RELOADER=$!
  "$LOADGEN" "$mode" --addr "127.0.0.1:$CG_PORT" --server-name localhost \
    --cert "$W/client.crt" --key "$W/client.key" --no-verify-server \
    --connections "$CONNECTIONS" --duration "$DURATION" > "$W/$mode.json"
  kill "$RELOADER" 2>/dev/null; wait "$RELOADER" 2>/dev/null || true
  after=$(rss_kib)
  [ -n "$settled" ] || settled=$after
  reloads=$(( $(grep -c "reloaded: serving generation" "$W/certgate.log") - reloads_before ))
  python3 - "$W/$mode.json" "$mode" "$before" "$after" "$reloads" "$W/certgate.log" <<'PY' || status=1
import json, re, statistics, sys
r = json.load(open(sys.argv[1])); mode = sys.argv[2]
before, after, reloads = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
took = [int(m) for m in re.findall(r"took_ms=(\d+)", open(sys.argv[6]).read())]
took.sort()
p50 = statistics.median(took) if took else 0
p99 = took[min(len(took) - 1, int(len(took) * 0.99))] if took else 0
failed = r["errors"] + r["non_2xx"]
print(f"  {mode:10s} {r['completed']:>9} done, {failed} failed, {reloads} reloads "
      f"(took median {p50} ms, p99 {p99} ms), VmRSS {before/1024:.1f} -> {after/1024:.1f} MiB")
sys.exit(0 if failed == 0 else 1)
PY
done
final=$(rss_kib)
echo "  VmRSS after the first phase $((settled / 1024)) MiB, at the end $((final / 1024)) MiB"
python3 -c "import sys; sys.exit(0 if $final <= $settled * 1.10 else 1)" || {
  echo "memory grew by more than 10% across reloads" >&2; status=1; }
errors=$(grep -c "reload failed" "$W/certgate.log" || true)
# The certificate and its key are two files, replaced one after the other: a reload that
# reads them in between finds a key that does not match, refuses, and keeps the old state
# (all or nothing); the next reload picks up both.
echo "  reloads refused (certificate and key caught between their two renames): $errors"
exit $status
