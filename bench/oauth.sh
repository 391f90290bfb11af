#!/usr/bin/env bash
# What the access-token check costs: keep-alive requests/s through certgate (release build) to
# the same upstream on two routes of one gateway, one without a token and one that needs a
# certificate-bound JWT from the built-in token service (signature checked once per token and
# cached by its SHA-256; binding, scope and X-Token-* headers on every request). Rounds
# alternate between the two routes.
#
#   bench/oauth.sh [--rounds N] [--duration S] [--connections N] [--smoke]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=3
DURATION=10
CONNECTIONS=64
PROFILE=release
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) ROUNDS=1; DURATION=2; CONNECTIONS=8; PROFILE=${BENCH_PROFILE:-dev} ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --connections) CONNECTIONS=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

. "$ROOT/bench/common.sh"
build_bins "$PROFILE"
make_workdir certgate-oauth-bench
make_pki
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/signing.key" 2>/dev/null
start_upstream
CG_PORT=$(free_port)
cat > "$W/certgate.toml" <<TOML
[runtime]
worker_threads = 2

[access_log]
enabled = false

[[listener]]
listen = "127.0.0.1:$CG_PORT"
min_tls_version = "1.3"
certificates = [{ cert = "$W/server.crt", key = "$W/server.key" }]

[listener.client_auth]
mode = "required"
trust = ["$W/ca/root.crt"]

[oauth]
issuer = "https://localhost/oauth"
audience = ["https://localhost/api"]
token_lifetime = "1h"

[[oauth.signing_key]]
key = "$W/signing.key"
state = "active"

[[oauth.client]]
client_id = "bench"
auth = "tls_client_auth"
ca = ["$W/ca/root.crt"]
tls_client_auth_san_uri = "spiffe://bench.test/client"
scopes = ["read"]

[[upstream]]
name = "backend"
url = "http://127.0.0.1:$UP_PORT"
max_idle_connections = 64

[[route]]
path = "/oauth"
upstream = "@oauth"
client_cert = "optional"

[[route]]
path = "/plain"
upstream = "backend"

[[route]]
path = "/api"
upstream = "backend"

[route.token]
issuer = "https://localhost/oauth"
audience = ["https://localhost/api"]
scopes = ["read"]
require_binding = true
TOML
"$CERTGATE" serve --config "$W/certgate.toml" 2>"$W/certgate.log" &
SERVER_PID=$!
wait_port "$CG_PORT"
TOKEN=$(curl -sf --cacert "$W/ca/root.crt" --cert "$W/client.crt" --key "$W/client.key" \
  -d grant_type=client_credentials -d client_id=bench "https://localhost:$CG_PORT/oauth/token" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

run() {
  "$LOADGEN" keepalive --addr "127.0.0.1:$CG_PORT" --cert "$W/client.crt" --key "$W/client.key" \
    --no-verify-server --connections "$CONNECTIONS" --duration "$1" --path "$2" "${@:3}"
}
run 1 /api/x --header "Authorization: Bearer $TOKEN" >/dev/null
: > "$W/results.txt"
for round in $(seq 1 "$ROUNDS"); do
  for route in plain api; do
    if [ "$route" = api ]; then
      out=$(run "$DURATION" /api/x --header "Authorization: Bearer $TOKEN")
    else
      out=$(run "$DURATION" /plain/x)
    fi
    echo "$route $out" >> "$W/results.txt"
  done
done
python3 - "$W/results.txt" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    route, raw = line.split(" ", 1)
    r = json.loads(raw)
    assert r["errors"] == 0 and r["non_2xx"] == 0, (route, r)
    rows.setdefault(route, []).append(r)
med = {k: statistics.median(x["per_second"] for x in v) for k, v in rows.items()}
p99 = {k: statistics.median(x["p99_ms"] for x in v) for k, v in rows.items()}
print("| route | requests/s (median) | p99 ms (median) |")
print("|---|---|---|")
for k, label in (("plain", "no token"), ("api", "bound JWT (check + cnf + scope)")):
    print(f"| {label} | {med[k]:.0f} | {p99[k]:.2f} |")
print(f"\nbound JWT / no token: {med['api'] / med['plain']:.3f}")
PY
