//! End-to-end tests that bodies stream through `certgate serve` without being held whole: a
//! 256 MiB upload with the gateway's memory watched, server-sent events seen one at a time,
//! and gRPC (Python `grpcio` on both sides) over HTTP/2 with its status in trailers.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gateway_support;

use gateway_support::*;

/// A listener in optional mode with a `joe` client certificate, one route to `upstream`
/// (whose `[[upstream]]` block gets `upstream_extra`).
fn gateway(dir: &std::path::Path, port: u16, upstream_extra: &str) -> Gateway {
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &["spiffe://example.test/joe"]));
    let config = format!(
        "{}{}{upstream_extra}\n[[route]]\nupstream = \"app\"\n",
        listener("optional", ""),
        upstream_block("app", port)
    );
    Gateway::start(dir, &config)
}

/// `VmRSS` or `VmHWM` of `pid`, in bytes.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A 256 MiB upload and a 256 MiB download pass whole, and the gateway's peak memory grows by
/// far less than the body: it streams both ways, it does not buffer.
#[test]
fn large_upload_and_download_stream_with_flat_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_sink, port) = streaming_server("sink-server");
    let gw = gateway(dir, port, "");
    // Warm up (a connection, TLS and the pool), then take the baseline.
    let warm = streaming_client(&gw, "upload", Some("joe"), &["--size", "1048576"]);
    assert_eq!(warm["body"], "1048576", "{warm}");
    let before = memory(gw.pid(), "VmRSS:");
    let size: u64 = 256 * 1024 * 1024;
    let out = streaming_client(&gw, "upload", Some("joe"), &["--size", &size.to_string()]);
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["body"], size.to_string(), "{out}");
    let down = streaming_client(&gw, "download", Some("joe"), &["--size", &size.to_string()]);
    assert_eq!(down["status"], 200, "{down}");
    assert_eq!(down["bytes"], size, "{down}");
    let peak = memory(gw.pid(), "VmHWM:");
    let grew = peak.saturating_sub(before);
    eprintln!(
        "gateway RSS {before} before, peak {peak} after {size} bytes each way ({out} {down})"
    );
    assert!(
        grew < 64 * 1024 * 1024,
        "peak RSS {peak} grew by {grew} bytes over {before} for {size} bytes each way"
    );
}

/// Server-sent events reach the client as they are sent: the client reads the first event
/// while the upstream still holds back the second (until the client acknowledges the first).
#[test]
fn server_sent_events_are_flushed_as_they_arrive() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_sse, port) = streaming_server("sse-server");
    let gw = gateway(dir, port, "");
    let out = streaming_client(&gw, "sse-client", Some("joe"), &["--upstream", &port.to_string()]);
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["content_type"], "text/event-stream", "{out}");
    assert_eq!(out["events"], serde_json::json!(["one", "after-ack"]), "{out}");
    assert!(out["first_after"].as_f64().unwrap() < 5.0, "{out}");
}

/// gRPC through the gateway to an `http2 = true` upstream: a unary call, a server-streaming
/// call, and a failing call whose status, message and trailing metadata arrive in trailers.
#[test]
fn grpc_calls_pass_with_trailers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_grpc, port) = streaming_server("grpc-server");
    let gw = gateway(dir, port, "http2 = true\n");
    let out = streaming_client(&gw, "grpc-client", Some("joe"), &[]);
    assert_eq!(out["say"], "echo:hi", "{out}");
    assert_eq!(out["say_code"], "OK", "{out}");
    assert_eq!(out["count"], serde_json::json!(["n0", "n1", "n2", "n3", "n4"]), "{out}");
    assert_eq!(out["count_code"], "OK", "{out}");
    assert_eq!(out["fail_code"], "PERMISSION_DENIED", "{out}");
    assert_eq!(out["fail_details"], "not you", "{out}");
    assert_eq!(out["fail_trailers"]["x-why"], "testing", "{out}");
}

/// The built-in `@echo` counts a request body as it streams and never holds it: a 256 MiB
/// upload is answered with its size while the gateway's peak RSS stays flat (quickstart's
/// echo route has no body limit).
#[test]
fn echo_counts_a_large_upload_without_holding_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    write_leaf(dir, "joe", &pki.client("joe", &[]));
    let config = format!("{}\n[[route]]\nupstream = \"@echo\"\n", listener("required", ""));
    let gw = Gateway::start(dir, &config);
    let warm = streaming_client(&gw, "upload", Some("joe"), &["--size", "1048576"]);
    assert_eq!(warm["status"], 200, "{warm}");
    let before = memory(gw.pid(), "VmRSS:");
    let size: u64 = 256 * 1024 * 1024;
    let out = streaming_client(&gw, "upload", Some("joe"), &["--size", &size.to_string()]);
    assert_eq!(out["status"], 200, "{out}");
    assert!(out["body"].as_str().unwrap().contains(&format!("\"body_bytes\": {size}")), "{out}");
    let peak = memory(gw.pid(), "VmHWM:");
    let grew = peak.saturating_sub(before);
    assert!(grew < 64 * 1024 * 1024, "peak RSS {peak} grew by {grew} over {before}");
}
