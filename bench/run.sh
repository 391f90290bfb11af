#!/usr/bin/env bash
# Benchmarks certgate against nginx and HAProxy configured for the same job, in one run on
# one machine.
#
#   bench/run.sh            full run: 3 interleaved rounds, 64 connections, 10 s per figure
#   bench/run.sh --smoke    a few seconds, to keep the harness working (CI runs this)
#
# All three servers: TLS 1.3, client certificate required and verified against the same CA
# (ECDSA P-256), identity headers forwarded, keep-alive connections to one plain-HTTP
# upstream, no access log, 2 workers (HAProxy: 2 threads). Each round measures every server,
# in an order that rotates from round to round. Measured with certgate-bench (one fixed group
# and cipher suite). Writes bench/out/results.json (raw) and bench/out/results.md (table with
# ratios certgate / nginx and certgate / HAProxy).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/out}
ROUNDS=3
DURATION=10
CONNECTIONS=64
SMOKE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1; ROUNDS=1; DURATION=2; CONNECTIONS=8 ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --connections) CONNECTIONS=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "--- installing nginx"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q && apt-get install -y -q nginx-full
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
  echo "--- installing haproxy"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q && apt-get install -y -q haproxy
fi
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

PROFILE=release
[ "$SMOKE" = 1 ] && PROFILE=${BENCH_PROFILE:-dev}
. "$ROOT/bench/common.sh"
build_bins "$PROFILE"
make_workdir certgate-bench

echo "--- PKI (certgate ca init, ECDSA P-256)"
make_pki

start_upstream

CG_PORT=$(free_port)
NG_PORT=$(free_port)
HA_PORT=$(free_port)
write_certgate_config > "$W/certgate.toml"
write_nginx_config > "$W/nginx.conf"
write_haproxy_config > "$W/haproxy.cfg"
"$CERTGATE" serve --check --config "$W/certgate.toml" >/dev/null
"$NGINX" -t -q -c "$W/nginx.conf" -p "$W" -e "$W/nginx-error.log"
"$HAPROXY" -c -q -f "$W/haproxy.cfg"

# Sums utime+stime (seconds) and VmHWM (KiB) over a process and its children.
proc_stats() {
  python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1])
tick = os.sysconf("SC_CLK_TCK")
pids = {root}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == root:
                pids.add(int(p))
        except OSError:
            pass
cpu = 0.0; hwm = 0
for p in pids:
    try:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu += (int(fields[11]) + int(fields[12])) / tick
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm += int(line.split()[1])
    except OSError:
        pass
print(f"{cpu} {hwm}")
PY
}

start_server() {
  case "$1" in
    certgate)
      "$CERTGATE" serve --config "$W/certgate.toml" 2>"$W/certgate.log" &
      SERVER_PID=$!; PORT=$CG_PORT ;;
    nginx)
      "$NGINX" -c "$W/nginx.conf" -p "$W" -e "$W/nginx-error.log" -g 'daemon off;' &
      SERVER_PID=$!; PORT=$NG_PORT ;;
    haproxy)
      # -db: foreground, one process (its threads), so $! is the server itself.
      "$HAPROXY" -db -f "$W/haproxy.cfg" 2>"$W/haproxy.log" &
      SERVER_PID=$!; PORT=$HA_PORT ;;
  esac
  wait_port "$PORT"
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

measure() { # server mode round
  local server=$1 mode=$2 round=$3 before after
  before=$(proc_stats "$SERVER_PID")
  "$LOADGEN" "$mode" --addr "127.0.0.1:$PORT" --server-name localhost \
    --cert "$W/client.crt" --key "$W/client.key" --no-verify-server \
    --connections "$CONNECTIONS" --duration "$DURATION" --label "$server" > "$W/one.json"
  after=$(proc_stats "$SERVER_PID")
  python3 - "$W/one.json" "$server" "$round" "$before" "$after" >> "$W/results.jsonl" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
b_cpu, _ = sys.argv[4].split(); a_cpu, a_hwm = sys.argv[5].split()
r.update(server=sys.argv[2], round=int(sys.argv[3]),
         cpu_seconds=float(a_cpu) - float(b_cpu), peak_rss_kib=int(a_hwm))
print(json.dumps(r))
PY
  tail -n 1 "$W/results.jsonl" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("  %-9s %-10s %10.0f/s  p50 %.2f ms  p99 %.2f ms  errors %d  non-2xx %d  cpu %.1fs  rss %.1f MiB" % (
    r["server"], r["mode"], r["per_second"], r["p50_ms"], r["p99_ms"], r["errors"], r["non_2xx"],
    r["cpu_seconds"], r["peak_rss_kib"] / 1024))'
}

: > "$W/results.jsonl"
SERVERS=(certgate nginx haproxy)
for round in $(seq 1 "$ROUNDS"); do
  # Rotate the order so that no server is always measured first (or last).
  shift_by=$(( (round - 1) % ${#SERVERS[@]} ))
  order="${SERVERS[*]:shift_by} ${SERVERS[*]:0:shift_by}"
  order=${order% }
  echo "--- round $round of $ROUNDS ($order)"
  for server in $order; do
    start_server "$server"
    # Warm up pools and caches so every server is measured in steady state.
    "$LOADGEN" keepalive --addr "127.0.0.1:$PORT" --cert "$W/client.crt" --key "$W/client.key" \
      --no-verify-server --connections "$CONNECTIONS" --duration 1 >/dev/null
    measure "$server" keepalive "$round"
    measure "$server" handshake "$round"
    stop_server
  done
done

mkdir -p "$OUT"
python3 "$ROOT/bench/report.py" "$W/results.jsonl" "$OUT" \
  --certgate "$("$CERTGATE" --version)" \
  --reference "nginx=$("$NGINX" -v 2>&1)" \
  --reference "haproxy=$("$HAPROXY" -v | awk 'NR == 1 { print $1, $2, $3 }')" \
  --profile "$PROFILE" --connections "$CONNECTIONS" --duration "$DURATION" --rounds "$ROUNDS" \
  $([ "$SMOKE" = 1 ] && echo --strict)
echo "--- wrote $OUT/results.md and $OUT/results.json"
