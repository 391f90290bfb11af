#!/usr/bin/env python3
"""Upstreams and clients for certgate's upgrade and streaming tests (upgrade_e2e.rs).

Servers print "port N" once listening and serve until killed:

  streaming.py ws-server      WebSocket echo (Python `websockets`); the text "headers" is
                              answered with the handshake request's headers as JSON.
  streaming.py sse-server     GET /events: sends event "one", then waits (10 s at most) for
                              GET /ack, then sends "after-ack" (or "no-ack" if none came).
  streaming.py sink-server    POST: reads the body in 1 MiB pieces and answers its length;
                              GET /download/N: sends N bytes.
  streaming.py grpc-server    plaintext HTTP/2 gRPC (grpcio generic handlers, raw bytes):
                              /test.Echo/Say (unary echo), /test.Echo/Count (server streaming,
                              N messages), /test.Echo/Fail (aborts PERMISSION_DENIED with a
                              trailing metadata entry).

Clients take --port (the gateway) --ca --cert --key and print one JSON object:

  streaming.py ws-client [--path P] [--idle S]   echo both ways and the upstream's view of the
                                                 headers; with --idle, wait S s silent, then
                                                 report whether the connection was closed.
  streaming.py ws-h2-client [--path P]           a WebSocket over HTTP/2 (RFC 8441, the `h2`
                                                 package): status, the setting, one echo and
                                                 the upstream's view of the headers.
  streaming.py sse-client --upstream PORT        first event, then /ack straight to the upstream,
                                                 then the second event.
  streaming.py upload --size BYTES               POSTs BYTES with Content-Length, streamed.
  streaming.py download --size BYTES             GETs BYTES and counts them.
  streaming.py grpc-client                       unary, streaming and failing calls.

Loopback only; every wait is bounded.
"""

import argparse
import http.client
import http.server
import json
import socket
import ssl
import sys
import threading
import time


def say_port(port):
    print(f"port {port}", flush=True)


def ws_server(_args):
    from websockets.sync.server import serve

    def handler(ws):
        for message in ws:
            if message == "headers":
                ws.send(json.dumps({k.lower(): v for k, v in ws.request.headers.raw_items()}))
            else:
                ws.send(message)

    with serve(handler, "127.0.0.1", 0) as server:
        say_port(server.socket.getsockname()[1])
        server.serve_forever()


def sse_server(_args):
    acked = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            if self.path == "/ack":
                acked.set()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            acked.clear()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"data: one\n\n")
            self.wfile.flush()
            second = b"after-ack" if acked.wait(10) else b"no-ack"
            self.wfile.write(b"data: " + second + b"\n\n")
            self.wfile.flush()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    say_port(server.server_address[1])
    server.serve_forever()


def sink_server(_args):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            size = int(self.path.rsplit("/", 1)[-1])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            piece = b"\x5a" * (1 << 20)
            while size > 0:
                n = min(size, len(piece))
                self.wfile.write(piece[:n])
                size -= n

        def do_POST(self):
            left = int(self.headers.get("Content-Length", "0"))
            total = 0
            while left > 0:
                piece = self.rfile.read(min(left, 1 << 20))
                if not piece:
                    break
                total += len(piece)
                left -= len(piece)
            body = str(total).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    say_port(server.server_address[1])
    server.serve_forever()


def grpc_server(_args):
    from concurrent import futures

    import grpc

    def say(request, _context):
        return b"echo:" + request

    def count(request, _context):
        for i in range(int(request.decode())):
            yield f"n{i}".encode()

    def fail(_request, context):
        context.set_trailing_metadata((("x-why", "testing"),))
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "not you")

    handlers = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Say": grpc.unary_unary_rpc_method_handler(say),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    say_port(port)
    server.wait_for_termination()


def client_tls(args):
    ctx = ssl.create_default_context(cafile=args.ca)
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    return ctx


def ws_client(args):
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    out = {}
    try:
        with connect(
            f"wss://localhost:{args.port}{args.path}",
            ssl=client_tls(args),
            open_timeout=10,
            additional_headers={"X-Client-Subject": "CN=admin"},
        ) as ws:
            out["status"] = 101
            ws.send("hello")
            out["echo"] = ws.recv(timeout=10)
            ws.send(b"\x00\x01binary")
            out["binary"] = ws.recv(timeout=10).hex()
            ws.send("headers")
            out["upstream_headers"] = json.loads(ws.recv(timeout=10))
            if args.idle:
                started = time.monotonic()
                try:
                    ws.recv(timeout=args.idle)
                    out["idle"] = "message"
                except TimeoutError:
                    out["idle"] = "open"
                except ConnectionClosed:
                    out["idle"] = "closed"
                out["idle_after"] = round(time.monotonic() - started, 2)
    except InvalidStatus as e:
        out["status"] = e.response.status_code
        out["body"] = e.response.body.decode(errors="replace")
    except (ssl.SSLError, ConnectionError, EOFError) as e:
        out["error"] = repr(e)
    print(json.dumps(out), flush=True)


def ws_h2_client(args):
    """A WebSocket over an HTTP/2 stream (RFC 8441), written with the `h2` package: waits for
    SETTINGS_ENABLE_CONNECT_PROTOCOL, sends an extended CONNECT, then one masked text frame,
    and reports the status, the setting, the echo and the upstream's view of the headers."""
    import os

    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    ctx = client_tls(args)
    ctx.set_alpn_protocols(["h2"])
    out = {}
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", args.port), timeout=10),
                           server_hostname="localhost")
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())

    def events():
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed")
        evs = conn.receive_data(data)
        sock.sendall(conn.data_to_send())
        return evs

    settled = False
    while not settled:
        settled = any(isinstance(ev, h2.events.RemoteSettingsChanged) for ev in events())
    out["enable_connect_protocol"] = conn.remote_settings.get(
        h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL, 0
    )
    if not out["enable_connect_protocol"]:
        print(json.dumps(out), flush=True)
        return
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, [
        (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
        (":path", args.path), (":authority", f"localhost:{args.port}"),
        ("sec-websocket-version", "13"), ("x-client-subject", "CN=admin"),
    ])
    sock.sendall(conn.data_to_send())
    def send_text(text):
        mask = os.urandom(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(text.encode()))
        conn.send_data(stream, b"\x81" + bytes([0x80 | len(payload)]) + mask + payload)
        sock.sendall(conn.data_to_send())

    def frames(buf):
        """Complete unmasked server text frames in buf (lengths < 64 KiB) and the rest."""
        texts = []
        while len(buf) >= 2:
            n, at = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, at = int.from_bytes(buf[2:4], "big"), 4
            if len(buf) < at + n:
                break
            texts.append(buf[at : at + n].decode())
            buf = buf[at + n :]
        return texts, buf

    got, texts = b"", []
    while "status" not in out or (out["status"] == 200 and len(texts) < 2):
        for ev in events():
            if isinstance(ev, h2.events.ResponseReceived):
                headers = {k.decode(): v.decode() for k, v in ev.headers}
                out["status"] = int(headers[":status"])
                out["headers"] = headers
                if out["status"] == 200:
                    send_text("hello")
                    send_text("headers")
            elif isinstance(ev, h2.events.DataReceived):
                got += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                sock.sendall(conn.data_to_send())
                new, got = frames(got)
                texts += new
            elif isinstance(ev, h2.events.StreamEnded) and "status" in out:
                out["ended"] = True
        if out.get("ended"):
            break
    if texts:
        out["echo"] = texts[0]
    if len(texts) > 1:
        out["upstream_headers"] = json.loads(texts[1])
    print(json.dumps(out), flush=True)


def sse_client(args):
    conn = http.client.HTTPSConnection("localhost", args.port, context=client_tls(args), timeout=15)
    conn.request("GET", "/events", headers={"Accept": "text/event-stream"})
    resp = conn.getresponse()
    out = {"status": resp.status, "content_type": resp.getheader("content-type")}
    events = []

    def next_event():
        lines = []
        while True:
            line = resp.readline()
            if not line:
                return None
            if line in (b"\n", b"\r\n"):
                return b"".join(lines).decode().strip()
            lines.append(line[len(b"data: ") :] if line.startswith(b"data: ") else line)

    started = time.monotonic()
    events.append(next_event())
    out["first_after"] = round(time.monotonic() - started, 2)
    ack = http.client.HTTPConnection("127.0.0.1", args.upstream, timeout=10)
    ack.request("GET", "/ack")
    ack.getresponse().read()
    events.append(next_event())
    out["events"] = events
    print(json.dumps(out), flush=True)


def upload(args):
    conn = http.client.HTTPSConnection("localhost", args.port, context=client_tls(args), timeout=60)
    conn.putrequest("POST", "/upload")
    conn.putheader("Content-Length", str(args.size))
    conn.putheader("Content-Type", "application/octet-stream")
    conn.endheaders()
    piece = b"\xa5" * (1 << 20)
    left = args.size
    started = time.monotonic()
    while left > 0:
        n = min(left, len(piece))
        conn.send(piece[:n])
        left -= n
    resp = conn.getresponse()
    body = resp.read().decode()
    print(
        json.dumps(
            {"status": resp.status, "body": body, "seconds": round(time.monotonic() - started, 2)}
        ),
        flush=True,
    )


def download(args):
    conn = http.client.HTTPSConnection("localhost", args.port, context=client_tls(args), timeout=60)
    conn.request("GET", f"/download/{args.size}")
    resp = conn.getresponse()
    total = 0
    while True:
        piece = resp.read(1 << 20)
        if not piece:
            break
        total += len(piece)
    print(json.dumps({"status": resp.status, "bytes": total}), flush=True)


def grpc_client(args):
    import grpc

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    creds = grpc.ssl_channel_credentials(read(args.ca), read(args.key), read(args.cert))
    out = {}
    with grpc.secure_channel(f"localhost:{args.port}", creds) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        say = channel.unary_unary("/test.Echo/Say")
        reply, call = say.with_call(b"hi", timeout=10)
        out["say"] = reply.decode()
        out["say_code"] = call.code().name
        count = channel.unary_stream("/test.Echo/Count")
        stream = count(b"5", timeout=10)
        out["count"] = [m.decode() for m in stream]
        out["count_code"] = stream.code().name
        fail = channel.unary_unary("/test.Echo/Fail")
        try:
            fail(b"", timeout=10)
            out["fail_code"] = "OK"
        except grpc.RpcError as e:
            out["fail_code"] = e.code().name
            out["fail_details"] = e.details()
            out["fail_trailers"] = {k: v for k, v in (e.trailing_metadata() or ())}
    print(json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("--port", type=int)
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--path", default="/ws")
    p.add_argument("--idle", type=float, default=0)
    p.add_argument("--upstream", type=int)
    p.add_argument("--size", type=int, default=0)
    args = p.parse_args()
    modes = {
        "ws-server": ws_server,
        "sse-server": sse_server,
        "sink-server": sink_server,
        "grpc-server": grpc_server,
        "ws-client": ws_client,
        "ws-h2-client": ws_h2_client,
        "sse-client": sse_client,
        "upload": upload,
        "download": download,
        "grpc-client": grpc_client,
    }
    modes[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
