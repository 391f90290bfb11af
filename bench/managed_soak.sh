#!/usr/bin/env bash
# Managed-certificate soak: a gateway whose listener certificate and upstream client
# certificate come from `certgate ca serve` with two-minute lifetimes (renewed about every
# minute) serves a steady trickle of mTLS requests for ten minutes. Not a timed test.
#
#   bench/managed_soak.sh [--duration S] [--rate N] [--profile P]
#                         (default 600 s, 5 requests a second, release)
#
# Each request is a new curl process (a new TLS handshake with the listener certificate of
# the moment), alternating HTTP/1.1 and HTTP/2; the upstream (an mTLS server that requires a
# certificate from the same CA) answers with the serial of the client certificate the gateway
# presented. Reports the requests sent and failed, the renewals of each certificate, the
# distinct listener and upstream-client serials seen, and VmRSS at the start and the end.
# Fails on any failed request, or when either certificate was not renewed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=600
RATE=5
PROFILE=release
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --profile) PROFILE=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

. "$ROOT/bench/common.sh"
build_bins "$PROFILE"
make_workdir certgate-managed-soak
cd "$W"
"$CERTGATE" ca init --ca-dir ca >/dev/null
"$CERTGATE" cert issue upstream --san localhost --ca-dir ca >/dev/null
"$CERTGATE" cert issue alice --san spiffe://example.com/alice --profile client --ca-dir ca >/dev/null

"$CERTGATE" ca serve --ca-dir ca --listen 127.0.0.1:0 2>ca.log >/dev/null &
PIDS+=($!)
for _ in $(seq 100); do grep -q 'listener .* on https://' ca.log && break; sleep 0.1; done
CA_URL=$(sed -n 's|.*listener .* on \(https://[^ ]*\).*|\1|p' ca.log | head -1)
[ -n "$CA_URL" ] || { cat ca.log; exit 1; }

python3 -B "$ROOT/crates/certgate/tests/support/mtls_echo.py" upstream.crt upstream.key ca/root.crt \
  >upstream.port &
PIDS+=($!)
for _ in $(seq 100); do [ -s upstream.port ] && break; sleep 0.1; done
UP_PORT=$(awk '{print $2}' upstream.port)

"$CERTGATE" ca token gw --san localhost --san 127.0.0.1 --ca-dir ca >gw.token
"$CERTGATE" ca token gw-client --san gw.internal --san spiffe://example.com/gw --ca-dir ca >client.token
CG_PORT=$(free_port)
ADMIN_PORT=$(free_port)
cat >certgate.toml <<TOML
state_dir = "state"

[[listener]]
listen = "127.0.0.1:$CG_PORT"
certificates = [{ managed = "gw", ca_url = "$CA_URL", root = "ca/root.crt", token_file = "gw.token", lifetime = "2m" }]
[listener.client_auth]
mode = "required"
trust = ["ca/root.crt"]

[[upstream]]
name = "app"
url = "https://localhost:$UP_PORT"
ca = ["ca/root.crt"]
client_cert = { managed = "gw-client", ca_url = "$CA_URL", root = "ca/root.crt", token_file = "client.token", lifetime = "2m" }

[[route]]
upstream = "app"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"
TOML
CERTGATE_LOG=info "$CERTGATE" serve --config certgate.toml 2>certgate.log >/dev/null &
SERVER_PID=$!
wait_port "$CG_PORT"
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }
RSS_START=$(rss_kib)

echo "--- $DURATION s of mTLS requests at $RATE/s through a gateway with managed certificates"
sent=0 failed=0
end=$(( $(date +%s) + DURATION ))
: >client-serials
: >listener-serials
while [ "$(date +%s)" -lt "$end" ]; do
  version=--http1.1; [ $((sent % 2)) = 1 ] && version=--http2
  if body=$(curl -sS --fail --max-time 10 $version --cacert ca/root.crt --cert alice.crt \
      --key alice.key -w '\n%{certs}' "https://localhost:$CG_PORT/" 2>>curl.err); then
    printf '%s\n' "$body" | sed -n 's/^client-serial: //p' | head -1 >>client-serials
    printf '%s\n' "$body" | sed -n 's/^Serial Number:[ ]*//p' | head -1 >>listener-serials
  else
    failed=$((failed + 1))
  fi
  sent=$((sent + 1))
  sleep "$(python3 -c "print(1/$RATE)")"
done
RSS_END=$(rss_kib)

renewed() { grep -c "managed certificate $1 renewed" certgate.log || true; }
echo "requests sent:               $sent"
echo "requests failed:             $failed"
echo "listener renewals (gw):      $(renewed gw)"
echo "client renewals (gw-client): $(renewed gw-client)"
echo "listener serials seen:       $(sort -u listener-serials | grep -c . || true)"
echo "upstream client serials:     $(sort -u client-serials | grep -c . || true)"
echo "renewal failures logged:     $(grep -c 'renewal failed' certgate.log || true)"
echo "VmRSS start / end (KiB):     $RSS_START / $RSS_END"
[ "$failed" = 0 ] || { echo "FAIL: $failed requests failed"; tail -5 curl.err; exit 1; }
[ "$(renewed gw)" -gt 0 ] && [ "$(renewed gw-client)" -gt 0 ] || { echo "FAIL: not renewed"; exit 1; }
echo "ok"
