#!/usr/bin/env python3
"""Raw clients for certgate's end-to-end tests: requests no polite client would send.

  raw_client.py request  --port P --ca F [--cert F --key F] [--alpn h2|http/1.1] --data BYTES
      Sends BYTES (Python escapes: \\r\\n ...) over TLS and prints everything read until the
      server closes (or 10 s pass).
  raw_client.py h2idle   --port P --ca F --cert F --key F
      Opens an HTTP/2 connection, answers SETTINGS and PINGs like a live client, sends no
      request, and prints the seconds until the server closes it and how many PINGs it sent.
  raw_client.py slowbody --port P --ca F --cert F --key F --path /x --length N --send K
      Sends a request head declaring N body bytes, then K of them, then nothing; prints the
      response and the seconds it took.
  raw_client.py flood    --port P --idle N --slow M --hold S
      Opens N TCP connections that send nothing and M that send half a TLS ClientHello, prints
      "ready" once all are open, and holds them S seconds.
  raw_client.py pipe     --port P --ca F --cert F --key F --requests N
      Sends N keep-alive requests on one connection and prints how many 200 answers came back.
  raw_client.py hold     --port P --ca F --cert F --key F [--alpn h2]
      HTTP/1.1: sends one keep-alive request and prints "served <status line>"; HTTP/2: sends
      the preface and prints "served" on the server's SETTINGS. Then keeps the connection
      open (answering PINGs) and prints "closed after S s" when the server closes it (20 s max).

  raw_client.py hello    --port P [--sni NAME] [--split whole|bytes|records]
      Makes a real ClientHello (Python's ssl, SNI NAME if given) and sends it: in one write,
      one byte per write, or re-framed as two TLS records. Prints "local <port>", the hex of
      the bytes sent, and what came back before the server closed or 3 s passed.

  raw_client.py proxied  --port P --ca F [--cert F --key F] --source IP:PORT [--v 1|2]
      Sends a PROXY protocol header (v2 by default) claiming SOURCE, then speaks TLS (SNI
      localhost) and sends one GET /; prints the response.

Loopback only; every wait is bounded.
"""

import argparse
import codecs
import resource
import socket
import ssl
import struct
import sys
import time


def tls(args, alpn=None):
    ctx = ssl.create_default_context(cafile=args.ca)
    if getattr(args, "cert", None):
        ctx.load_cert_chain(args.cert, args.key)
    if alpn:
        ctx.set_alpn_protocols([alpn])
    raw = socket.create_connection(("127.0.0.1", args.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def read_all(sock, limit=10.0):
    deadline = time.monotonic() + limit
    out = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ssl.SSLError, ConnectionResetError) as e:
            out += f"\n[read error: {e}]".encode()
            break
        if not chunk:
            break
        out += chunk
    return out


def request(args):
    data = codecs.escape_decode(args.data.encode())[0]
    with tls(args, args.alpn) as s:
        s.sendall(data)
        sys.stdout.buffer.write(read_all(s))


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def answer_frames(s, buf):
    """Answers the complete HTTP/2 frames in buf as a live client does (SETTINGS and PING
    acknowledged); returns the incomplete rest and how many PINGs were answered."""
    pings = 0
    while len(buf) >= 9:
        length = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + length:
            break
        kind, flags, payload = buf[3], buf[4], buf[9 : 9 + length]
        buf = buf[9 + length :]
        if kind == 4 and not flags & 1:
            s.sendall(frame(4, 1, 0))
        elif kind == 6 and not flags & 1:
            pings += 1
            s.sendall(frame(6, 1, 0, payload))
    return buf, pings


def h2idle(args):
    s = tls(args, "h2")
    if s.selected_alpn_protocol() != "h2":
        print("no h2")
        return
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
    started = time.monotonic()
    pings = 0
    buf = b""
    s.settimeout(1)
    while time.monotonic() - started < 60:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except (ssl.SSLError, ConnectionResetError, OSError):
            break
        if not chunk:
            break
        buf, answered = answer_frames(s, buf + chunk)
        pings += answered
    print(f"closed after {time.monotonic() - started:.2f} s; pings {pings}")


def slowbody(args):
    with tls(args, "http/1.1") as s:
        head = (
            f"POST {args.path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {args.length}\r\n\r\n"
        ).encode()
        started = time.monotonic()
        s.sendall(head + b"x" * args.send)
        out = read_all(s, 30)
        sys.stdout.buffer.write(out)
        print(f"\n[after {time.monotonic() - started:.2f} s]")


def flood(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # Half a ClientHello: a record header promising 512 bytes, then 5 of them.
    partial = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03])
    held = []
    for i in range(args.idle + args.slow):
        c = socket.create_connection(("127.0.0.1", args.port), timeout=10)
        if i >= args.idle:
            c.sendall(partial)
        held.append(c)
    print("ready", flush=True)
    time.sleep(args.hold)
    for c in held:
        c.close()


def pipe(args):
    ok = 0
    with tls(args, "http/1.1") as s:
        f = s.makefile("rb")
        for _ in range(args.requests):
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            status = f.readline()
            length = 0
            while True:
                line = f.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            f.read(length)
            if status.split()[1:2] == [b"200"]:
                ok += 1
    print(f"ok {ok}")


def hold(args):
    s = tls(args, args.alpn)
    started = time.monotonic()
    if args.alpn == "h2":
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
        first = s.recv(65536)
        print("served" if first else "no answer", flush=True)
    else:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first = s.recv(65536)
        print("served " + first.split(b"\r\n")[0].decode(), flush=True)
    s.settimeout(1)
    buf = first if args.alpn == "h2" else b""
    while time.monotonic() - started < 20:
        # Answer SETTINGS and PINGs like a live HTTP/2 client (a graceful close waits for them).
        if args.alpn == "h2":
            buf, _ = answer_frames(s, buf)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except (ssl.SSLError, ConnectionResetError, OSError):
            break
        if not chunk:
            break
        buf += chunk
    print(f"closed after {time.monotonic() - started:.2f} s", flush=True)


def client_hello(sni):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def hello(args):
    data = client_hello(args.sni)
    if args.split == "records":
        # The same handshake message in two TLS records.
        body = data[5:]
        half = len(body) // 2
        rec = lambda part: data[:3] + struct.pack("!H", len(part)) + part
        data = rec(body[:half]) + rec(body[half:])
    s = socket.create_connection(("127.0.0.1", args.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    print("local", s.getsockname()[1])
    print("sent", data.hex())
    if args.split == "bytes":
        for i in range(len(data)):
            s.sendall(data[i : i + 1])
            time.sleep(0.001)
    else:
        s.sendall(data)
    got = b""
    s.settimeout(3)
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except (socket.timeout, OSError):
        pass
    print("received", got.hex())
    sys.stdout.flush()


def proxied(args):
    ip, port = args.source.rsplit(":", 1)
    s = socket.create_connection(("127.0.0.1", args.port), timeout=10)
    if args.v == 1:
        s.sendall(f"PROXY TCP4 {ip} 127.0.0.1 {port} {args.port}\r\n".encode())
    else:
        addrs = socket.inet_aton(ip) + socket.inet_aton("127.0.0.1")
        addrs += struct.pack("!HH", int(port), args.port)
        s.sendall(b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs)
    ctx = ssl.create_default_context(cafile=args.ca)
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    t = ctx.wrap_socket(s, server_hostname="localhost")
    t.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    sys.stdout.write(read_all(t).decode("utf-8", "replace"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--alpn", default="http/1.1")
    p.add_argument("--data", default="")
    p.add_argument("--path", default="/")
    p.add_argument("--length", type=int, default=0)
    p.add_argument("--send", type=int, default=0)
    p.add_argument("--idle", type=int, default=0)
    p.add_argument("--slow", type=int, default=0)
    p.add_argument("--hold", type=float, default=0)
    p.add_argument("--requests", type=int, default=1)
    p.add_argument("--sni")
    p.add_argument("--split", default="whole")
    p.add_argument("--source")
    p.add_argument("--v", type=int, default=2)
    args = p.parse_args()
    {"request": request, "h2idle": h2idle, "slowbody": slowbody, "flood": flood, "pipe": pipe,
     "hold": hold, "hello": hello, "proxied": proxied}[
        args.mode
    ](args)


if __name__ == "__main__":
    main()
