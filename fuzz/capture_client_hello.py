#!/usr/bin/env python3
"""Captures real TLS ClientHellos for the client_hello fuzz target's seeds.

A tiny TCP listener on loopback accepts one connection per client run, saves the first bytes
the client sends (its ClientHello records, up to the first pause), and closes. The clients are
openssl s_client and curl with a few option sets. Usage: capture_client_hello.py OUT_DIR
"""
import os
import socket
import subprocess
import sys
import threading

CLIENTS = {
    "openssl-default": ["openssl", "s_client", "-connect", "{addr}", "-servername", "localhost"],
    "openssl-tls12": ["openssl", "s_client", "-connect", "{addr}", "-tls1_2", "-servername", "localhost"],
    "openssl-tls13": ["openssl", "s_client", "-connect", "{addr}", "-tls1_3", "-alpn", "h2,http/1.1"],
    "openssl-no-sni": ["openssl", "s_client", "-connect", "{addr}", "-noservername"],
    "openssl-groups": ["openssl", "s_client", "-connect", "{addr}", "-groups", "P-384:P-521:ffdhe2048"],
    "curl-default": ["curl", "-sk", "--max-time", "2", "https://localhost:{port}/"],
    "curl-tls12-http1": ["curl", "-sk", "--max-time", "2", "--http1.1", "--tls-max", "1.2", "https://localhost:{port}/"],
    "curl-ip": ["curl", "-sk", "--max-time", "2", "https://127.0.0.1:{port}/x"],
}


def capture(listener, path):
    conn, _ = listener.accept()
    conn.settimeout(1.0)
    data = b""
    try:
        while len(data) < 65536:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    conn.close()
    with open(path, "wb") as f:
        f.write(data)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, argv in CLIENTS.items():
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        path = os.path.join(out, name)
        t = threading.Thread(target=capture, args=(listener, path))
        t.start()
        argv = [a.format(addr=f"127.0.0.1:{port}", port=port) for a in argv]
        client = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        t.join()
        client.kill()
        client.wait()
        listener.close()
        print(f"{name}: {os.path.getsize(path)} bytes")
        two_records(path)


def two_records(path):
    """Writes PATH-2rec: the same handshake bytes re-framed into two TLS records."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 10 or data[0] != 0x16:
        return
    length = int.from_bytes(data[3:5], "big")
    body = data[5:5 + length]
    half = len(body) // 2
    framed = b"".join(data[:3] + len(part).to_bytes(2, "big") + part
                      for part in (body[:half], body[half:]))
    with open(path + "-2rec", "wb") as f:
        f.write(framed + data[5 + length:])


if __name__ == "__main__":
    main()
