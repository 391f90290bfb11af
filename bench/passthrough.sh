#!/usr/bin/env bash
# Passthrough relay cost: nginx terminates mTLS (the same nginx as bench/run.sh), measured
# directly and through a certgate listener that relays its SNI (`localhost`) undecrypted.
# Alternating rounds; reports connections/s (full mTLS handshakes), keep-alive requests/s and
# the MiB/s of a 256 MiB download over one connection through the relay, as ratios to the
# direct connection, and the relay's CPU-seconds.
#
#   bench/passthrough.sh [--rounds N] [--duration S] [--connections N]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=3
DURATION=10
CONNECTIONS=64
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --connections) CONNECTIONS=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "nginx is missing (apt-get install nginx)" >&2; exit 2; }

. "$ROOT/bench/common.sh"
build_bins release
make_workdir certgate-passthrough
make_pki
start_upstream
NG_PORT=$(free_port)
CG_PORT=$(free_port)
write_nginx_config > "$W/nginx.conf"
cat > "$W/certgate.toml" <<TOML
[runtime]
worker_threads = 2

[access_log]
enabled = false

[[listener]]
listen = "127.0.0.1:$CG_PORT"
certificates = [{ cert = "$W/server.crt", key = "$W/server.key" }]

[[route]]
upstream = "@echo"
client_cert = "optional"

[[passthrough]]
name = "nginx"
sni = ["localhost"]
upstream = "127.0.0.1:$NG_PORT"
TOML
"$CERTGATE" serve --check --config "$W/certgate.toml" >/dev/null
"$NGINX" -c "$W/nginx.conf" -p "$W" -e "$W/nginx-error.log" -g 'daemon off;' &
PIDS+=($!)
wait_port "$NG_PORT"
"$CERTGATE" serve --config "$W/certgate.toml" 2>"$W/certgate.log" &
RELAY_PID=$!
PIDS+=($RELAY_PID)
wait_port "$CG_PORT"

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
: > "$W/results.jsonl"
for round in $(seq 1 "$ROUNDS"); do
  for mode in handshake keepalive; do
    for path in direct relay; do
      port=$NG_PORT; [ "$path" = relay ] && port=$CG_PORT
      before=$(cpu "$RELAY_PID")
      "$LOADGEN" "$mode" --addr "127.0.0.1:$port" --server-name localhost \
        --cert "$W/client.crt" --key "$W/client.key" --no-verify-server \
        --connections "$CONNECTIONS" --duration "$DURATION" --label "$path" > "$W/one.json"
      after=$(cpu "$RELAY_PID")
      python3 - "$W/one.json" "$path" "$mode" "$round" "$before" "$after" >> "$W/results.jsonl" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1]))
tick = os.sysconf("SC_CLK_TCK")
r.update(path=sys.argv[2], mode=sys.argv[3], round=int(sys.argv[4]),
         relay_cpu_seconds=(float(sys.argv[6]) - float(sys.argv[5])) / tick)
print(json.dumps(r))
PY
    done
  done
done
# Bulk transfer: a 256 MiB file downloaded over one connection with curl, direct and relayed.
head -c $((256 * 1024 * 1024)) /dev/zero > "$W/bulk.bin"
: > "$W/bulk.txt"
for round in $(seq 1 "$ROUNDS"); do
  for path in direct relay; do
    port=$NG_PORT; [ "$path" = relay ] && port=$CG_PORT
    speed=$(curl -s -k --cert "$W/client.crt" --key "$W/client.key" --resolve "localhost:$port:127.0.0.1" \
      -o /dev/null -w '%{speed_download}' "https://localhost:$port/bulk.bin")
    echo "$round $path $speed" >> "$W/bulk.txt"
  done
done
python3 - "$W/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| figure | direct to nginx (median) | through certgate passthrough (median) | relay / direct (median of rounds) | certgate CPU-seconds per run (relay) |")
print("|---|---|---|---|---|")
for mode, name in (("handshake", "full mTLS connections/s"), ("keepalive", "keep-alive requests/s")):
    d = {r["round"]: r for r in rows if r["mode"] == mode and r["path"] == "direct"}
    p = {r["round"]: r for r in rows if r["mode"] == mode and r["path"] == "relay"}
    ratios = [p[k]["per_second"] / d[k]["per_second"] for k in d if k in p and d[k]["per_second"]]
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    errors = sum(r["errors"] for r in rows if r["mode"] == mode)
    print(f"| {name} | {med([r['per_second'] for r in d.values()]):,.0f} | "
          f"{med([r['per_second'] for r in p.values()]):,.0f} | **{med(ratios):.2f}×** "
          f"({min(ratios):.2f}..{max(ratios):.2f}) | {med([r['relay_cpu_seconds'] for r in p.values()]):.2f} |")
bulk = {}
for line in open(sys.argv[1].replace("results.jsonl", "bulk.txt")):
    rnd, path, speed = line.split()
    bulk.setdefault(int(rnd), {})[path] = float(speed) / (1024 * 1024)
ratios = [b["relay"] / b["direct"] for b in bulk.values() if b.get("direct")]
med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"| 256 MiB download over one connection (MiB/s) | {med([b['direct'] for b in bulk.values()]):,.0f} | "
      f"{med([b['relay'] for b in bulk.values()]):,.0f} | **{med(ratios):.2f}×** ({min(ratios):.2f}..{max(ratios):.2f}) | — |")
print(f"\nErrors: {sum(r['errors'] for r in rows)}; non-2xx: {sum(r['non_2xx'] for r in rows)}.")
PY
