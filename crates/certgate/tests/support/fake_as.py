#!/usr/bin/env python3
"""A stand-in authorization server for the phantom-token tests: HTTPS (no client certificate
asked for) on 127.0.0.1, answering every POST as an RFC 7662 introspection endpoint with
`Accept: application/jwt` would (Curity's phantom-token form).

  fake_as.py --cert C --key K --mode MODE --log FILE [--signing-key SK --kid KID --iss ISS
             --aud AUD --client-cert CERT]

MODE: `jwt` answers 200 with an at+jwt signed by SK (PyJWT) and bound to CERT's thumbprint;
`204`, `500` and `503` answer that status. Each request is appended to FILE as a JSON line
(method, path, headers, form, the JWT answered). Prints `port N` once listening.
"""

import argparse
import base64
import hashlib
import json
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

ARGS = None
LOCK = threading.Lock()


def thumbprint(path):
    with open(path, "rb") as f:
        cert = x509.load_pem_x509_certificates(f.read())[0]
    der = cert.public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def signed_jwt():
    with open(ARGS.signing_key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    now = int(time.time())
    claims = {
        "iss": ARGS.iss,
        "sub": "payments",
        "aud": ARGS.aud,
        "client_id": "payments",
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "scope": "accounts:read",
        "cnf": {"x5t#S256": thumbprint(ARGS.client_cert)},
    }
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": ARGS.kid, "typ": "at+jwt"})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        record = {
            "method": "POST",
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "form": urllib.parse.parse_qs(body),
        }
        payload = signed_jwt().encode() if ARGS.mode == "jwt" else b""
        record["answer"] = payload.decode()
        with LOCK, open(ARGS.log, "a") as f:
            f.write(json.dumps(record) + "\n")
        if ARGS.mode == "jwt":
            self.send_response(200)
            self.send_header("Content-Type", "application/jwt")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_response(int(ARGS.mode))
        self.send_header("Content-Length", "0")
        self.end_headers()


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--mode", required=True, choices=["jwt", "204", "500", "503"])
    p.add_argument("--log", required=True)
    for name in ("--signing-key", "--kid", "--iss", "--aud", "--client-cert"):
        p.add_argument(name)
    ARGS = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(ARGS.cert, ARGS.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
