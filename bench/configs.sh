# Config templates for bench/run.sh: certgate and nginx doing the same job.
# Variables: W (work dir), CG_PORT, NG_PORT, UP_PORT.

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

write_certgate_config() {
  echo "# filled in once the gateway config format lands" >&2
  return 1
}
