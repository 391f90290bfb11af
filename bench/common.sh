# Shared by bench/run.sh and bench/profile.sh: the test PKI, ports, and the configs of
# certgate, nginx and HAProxy doing the same job.
# Variables: W (work dir), CERTGATE (binary), CG_PORT, NG_PORT, HA_PORT, UP_PORT.

# Builds certgate and certgate-bench with cargo profile $1; sets CERTGATE and LOADGEN.
build_bins() {
  local profile=$1 target_dir
  echo "--- building certgate and certgate-bench ($profile)"
  (cd "$ROOT" && cargo build --profile "$profile" -p certgate -p certgate-bench --locked -q)
  target_dir=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  local bin_dir=$target_dir/$([ "$profile" = dev ] && echo debug || echo "$profile")
  CERTGATE=$bin_dir/certgate
  LOADGEN=$bin_dir/certgate-bench
}

# Makes the work directory W; on exit, stops everything in PIDS, the server under test
# (SERVER_PID) and nginx, and removes W.
make_workdir() {
  W=$(mktemp -d "/tmp/$1.XXXXXX")
  chmod 755 "$W"
  PIDS=()
  trap cleanup EXIT
}

cleanup() {
  for pid in "${PIDS[@]:-}" "${SERVER_PID:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  [ -f "$W/nginx.pid" ] && kill "$(cat "$W/nginx.pid" 2>/dev/null)" 2>/dev/null || true
  rm -rf "$W"
}

# Starts the plain-HTTP upstream on a free port (UP_PORT).
start_upstream() {
  UP_PORT=$(free_port)
  "$LOADGEN" upstream --listen "127.0.0.1:$UP_PORT" --threads 1 2>/dev/null &
  PIDS+=($!)
  wait_port "$UP_PORT"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "port $1 did not open" >&2; return 1
}

# Root + intermediate CA (ECDSA P-256), a server certificate for localhost and a client
# certificate with a SPIFFE ID, all made by certgate.
make_pki() {
  "$CERTGATE" ca init --ca-dir "$W/ca" >/dev/null
  "$CERTGATE" cert issue server --san localhost --san 127.0.0.1 --out-dir "$W" --ca-dir "$W/ca" >/dev/null
  "$CERTGATE" cert issue client --san spiffe://bench.test/client --out-dir "$W" --ca-dir "$W/ca" >/dev/null
}

write_nginx_config() {
  cat <<NGINX
worker_processes 2;
pid $W/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend {
    server 127.0.0.1:$UP_PORT;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$NG_PORT ssl;
    server_name localhost;
    ssl_certificate     $W/server.crt;
    ssl_certificate_key $W/server.key;
    ssl_protocols TLSv1.3;
    ssl_client_certificate $W/ca/root.crt;
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_session_cache off;
    ssl_session_tickets off;
    # certgate has no per-connection request limit; lift nginx's (default 1000) to match.
    keepalive_requests 100000000;
    # A static file for bulk-transfer figures (bench/passthrough.sh); unused by run.sh.
    location = /bulk.bin {
      root $W;
    }
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Client-Verify      \$ssl_client_verify;
      proxy_set_header X-Client-Subject     \$ssl_client_s_dn;
      proxy_set_header X-Client-Issuer      \$ssl_client_i_dn;
      proxy_set_header X-Client-Serial      \$ssl_client_serial;
      proxy_set_header X-Client-Fingerprint \$ssl_client_fingerprint;
      proxy_set_header X-Client-Not-Before  \$ssl_client_v_start;
      proxy_set_header X-Client-Not-After   \$ssl_client_v_end;
      proxy_set_header X-Client-Cert        \$ssl_client_escaped_cert;
    }
  }
}
NGINX
}

# The same job as write_nginx_config for HAProxy (2.6): TLS 1.3 only, client certificate
# required and verified against the same root, no session cache or tickets, the same 8
# identity headers (inbound copies replaced), keep-alive to the upstream, no log,
# 2 threads in one process. HAProxy has no verify-depth setting (OpenSSL's default, 100,
# applies). Its values differ in form from nginx's: X-Client-Verify is OpenSSL's result
# code (0) rather than SUCCESS, the dates are ASN.1 times (YYMMDDhhmmssZ), and X-Client-Cert
# is the leaf's DER in base64 rather than the URL-escaped PEM.
write_haproxy_config() {
  cat <<HAPROXY
global
  nbthread 2
  # As many connections as nginx's 2 workers x 4096 (HAProxy sizes its FD limit from this).
  maxconn 8192
  tune.ssl.cachesize 0
  # Load the key from server.key next to server.crt (rather than server.crt.key).
  ssl-load-extra-del-ext

defaults
  mode http
  option http-keep-alive
  http-reuse always
  # nginx's defaults: 60 s to read a request or answer, 75 s idle keep-alive.
  timeout connect 60s
  timeout client 60s
  timeout server 60s
  timeout http-request 60s
  timeout http-keep-alive 75s

frontend bench
  bind 127.0.0.1:$HA_PORT ssl crt $W/server.crt ssl-min-ver TLSv1.3 no-tls-tickets ca-file $W/ca/root.crt verify required
  maxconn 8192
  # set-header first removes any inbound copy of the header, as proxy_set_header does.
  http-request set-header X-Client-Verify      %[ssl_c_verify]
  http-request set-header X-Client-Subject     %[ssl_c_s_dn(,0,rfc2253)]
  http-request set-header X-Client-Issuer      %[ssl_c_i_dn(,0,rfc2253)]
  http-request set-header X-Client-Serial      %[ssl_c_serial,hex]
  http-request set-header X-Client-Fingerprint %[ssl_c_sha1,hex,lower]
  http-request set-header X-Client-Not-Before  %[ssl_c_notbefore]
  http-request set-header X-Client-Not-After   %[ssl_c_notafter]
  http-request set-header X-Client-Cert        %[ssl_c_der,base64]
  default_backend upstream

backend upstream
  server up 127.0.0.1:$UP_PORT
HAPROXY
}

write_certgate_config() {
  # The admin listener is on, as in production: its metrics (per-route counters, the
  # duration histogram, byte counts) are part of what is measured.
  # BENCH_ADMIN=0 leaves it off, to measure what the metrics cost.
  if [ "${BENCH_ADMIN:-1}" = 1 ]; then
    CG_ADMIN_PORT=${CG_ADMIN_PORT:-$(free_port)}
    printf '[admin]\nlisten = "127.0.0.1:%s"\n\n' "$CG_ADMIN_PORT"
  fi
  cat <<TOML
[runtime]
worker_threads = 2

[access_log]
enabled = false

[[listener]]
name = "bench"
listen = "127.0.0.1:$CG_PORT"
min_tls_version = "1.3"
certificates = [{ cert = "$W/server.crt", key = "$W/server.key" }]

[listener.client_auth]
mode = "required"
trust = ["$W/ca/root.crt"]
max_chain_depth = 2

[[upstream]]
name = "backend"
url = "http://127.0.0.1:$UP_PORT"
max_idle_connections = 64

[[route]]
upstream = "backend"
identity_headers = "nginx"
TOML
}
