#!/usr/bin/env bash
# Profiles certgate under the benchmark's load, to see where the time goes.
#
#   bench/profile.sh keepalive|handshake [perf|callgrind] [--duration S] [--connections N]
#
# perf (default): `perf record -g` on the gateway while certgate-bench drives it; prints the
#   top of `perf report` (children and self) and leaves bench/out/perf.data.
# callgrind: instruction counts that do not depend on machine noise; prints the top of
#   callgrind_annotate and leaves bench/out/callgrind.out (much slower: use a short duration).
#
# Uses the `profiling` cargo profile (release code with line tables, not stripped) and the
# same PKI, upstream and certgate config as bench/run.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/out}
MODE=${1:-keepalive}
TOOL=${2:-perf}
shift $(($# >= 2 ? 2 : $#))
DURATION=10
CONNECTIONS=64
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift ;;
    --connections) CONNECTIONS=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
case "$MODE" in keepalive|handshake) ;; *) echo "mode must be keepalive or handshake" >&2; exit 2 ;; esac
case "$TOOL" in
  perf) command -v perf >/dev/null || { echo "perf is missing (apt-get install linux-perf)" >&2; exit 2; } ;;
  callgrind) command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 2; } ;;
  *) echo "tool must be perf or callgrind" >&2; exit 2 ;;
esac

. "$ROOT/bench/common.sh"
build_bins profiling
make_workdir certgate-profile
make_pki
start_upstream
CG_PORT=$(free_port)
NG_PORT=0
write_certgate_config > "$W/certgate.toml"

mkdir -p "$OUT"
case "$TOOL" in
  perf)
    perf record -q -g -o "$OUT/perf.data" -- "$CERTGATE" serve --config "$W/certgate.toml" 2>/dev/null &
    ;;
  callgrind)
    valgrind -q --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
      "$CERTGATE" serve --config "$W/certgate.toml" 2>/dev/null &
    ;;
esac
SERVER_PID=$!
wait_port "$CG_PORT"
"$LOADGEN" "$MODE" --addr "127.0.0.1:$CG_PORT" --cert "$W/client.crt" --key "$W/client.key" \
  --no-verify-server --connections "$CONNECTIONS" --duration "$DURATION"
kill -INT "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true

case "$TOOL" in
  perf)
    echo "--- inclusive (children)"
    perf report -i "$OUT/perf.data" --stdio --children --no-demangle -g none --percent-limit 2 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | head -60
    echo "--- self"
    perf report -i "$OUT/perf.data" --stdio --no-children -g none --percent-limit 0.7 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | head -60
    ;;
  callgrind)
    callgrind_annotate --inclusive=yes "$OUT/callgrind.out" 2>/dev/null | head -70
    ;;
esac
