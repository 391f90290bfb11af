#!/usr/bin/env bash
# A 1 GiB upload through certgate (release build) to the built-in @echo, which counts the
# body as it streams: reports MiB/s and the gateway's resident memory before and at its peak,
# to show that bodies stream with flat memory (the CI test does 256 MiB).
#
#   bench/upload.sh [--size-mib N]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZE_MIB=1024
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mib) SIZE_MIB=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

. "$ROOT/bench/common.sh"
build_bins release
make_workdir certgate-upload
make_pki
CG_PORT=$(free_port)
cat > "$W/certgate.toml" <<TOML
[runtime]
worker_threads = 2

[access_log]
enabled = false

[[listener]]
listen = "127.0.0.1:$CG_PORT"
certificates = [{ cert = "$W/server.crt", key = "$W/server.key" }]

[listener.client_auth]
mode = "required"
trust = ["$W/ca/root.crt"]

[[route]]
upstream = "@echo"
TOML
"$CERTGATE" serve --config "$W/certgate.toml" 2>"$W/certgate.log" &
SERVER_PID=$!
wait_port "$CG_PORT"
mem() { awk -v f="$1" '$1 == f {print $2}' "/proc/$SERVER_PID/status"; }
STREAMING="$ROOT/crates/certgate/tests/support/streaming.py"
client() {
  python3 "$STREAMING" upload --port "$CG_PORT" --ca "$W/ca/root.crt" \
    --cert "$W/client.crt" --key "$W/client.key" --size "$1"
}
client $((1024 * 1024)) > /dev/null
before=$(mem VmRSS:)
out=$(client $((SIZE_MIB * 1024 * 1024)))
peak=$(mem VmHWM:)
python3 - "$out" "$before" "$peak" "$SIZE_MIB" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); before, peak, mib = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
assert r["status"] == 200 and f'"body_bytes": {mib * 1024 * 1024}' in r["body"], r
print(f"| upload | MiB/s | gateway RSS before (KiB) | gateway peak RSS (KiB) | growth (KiB) |")
print(f"|---|---|---|---|---|")
print(f"| {mib} MiB, one HTTP/1.1 request over mTLS to @echo | {mib / r['seconds']:,.0f} | {before:,} | {peak:,} | {peak - before:,} |")
PY
