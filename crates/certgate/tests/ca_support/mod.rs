//! Helpers for the online CA's end-to-end tests: `certgate ca serve` on a scratch CA, and the
//! client commands and openssl checks run against it. A test using them declares
//! `mod gateway_support; mod pki_support; mod ca_support;`.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::gateway_support::Gateway;
use crate::pki_support::{Scratch, text};

/// `certgate ca serve --listen 127.0.0.1:0` on the scratch CA (`ca/`), with `ca/root.crt`
/// copied to `root.crt` for the curl helpers.
pub fn ca_serve(s: &Scratch, extra: &[&str]) -> Gateway {
    ca_serve_with_env(s, extra, &[])
}

/// [`ca_serve`] with extra environment variables.
pub fn ca_serve_with_env(s: &Scratch, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
    std::fs::copy(s.path("ca/root.crt"), s.path("root.crt")).unwrap();
    let mut args = vec!["ca", "serve", "--ca-dir", "ca", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Gateway::start_command_with_env(&s.dir, &args, env)
}

/// `certgate cert request NAME --ca-url URL --token T ...` with `args`.
pub fn cert_request(s: &Scratch, gw: &Gateway, name: &str, token: &str, args: &[&str]) -> Output {
    let url = gw.url("");
    let mut all = vec!["cert", "request", name, "--ca-url", &url, "--token", token];
    all.extend_from_slice(args);
    s.run(&all)
}

/// The public key of a certificate or private key file, as openssl prints it.
pub fn public_key(s: &Scratch, file: &str, cert: bool) -> String {
    let out = if cert {
        s.openssl(&["x509", "-in", file, "-noout", "-pubkey"])
    } else {
        s.openssl(&["pkey", "-in", file, "-pubout"])
    };
    assert!(out.status.success(), "{file}: {}", text(&out));
    text(&out)
}

/// The serial of `NAME.crt` as `openssl crl -text` prints revoked serials (upper-case hex).
pub fn serial(s: &Scratch, cert: &str) -> String {
    let out = s.openssl(&["x509", "-in", cert, "-noout", "-serial"]);
    text(&out).trim().trim_start_matches("serial=").to_string()
}

const PAIR_READER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/pair_reader.py");

/// A reader looping on the scratch files `NAME.crt` and `NAME.key` (through `.NAME.data`
/// once that exists) with Python's cryptography, started and past its first read.
pub fn pair_reader(s: &Scratch, name: &str) -> Child {
    let path = |f: String| s.path(&f).display().to_string();
    let child = Command::new("python3")
        .args(["-B", PAIR_READER])
        .args([path(format!("{name}.crt")), path(format!("{name}.key"))])
        .args([path(format!("stop-{name}")), path(format!(".{name}.data"))])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.path(&format!("stop-{name}.ready")).exists() {
        assert!(Instant::now() < deadline, "the pair reader never read {name}");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Stops a [`pair_reader`] and returns what it saw: `{"reads", "failures", "serials"}`.
pub fn pair_reader_result(s: &Scratch, name: &str, reader: Child) -> serde_json::Value {
    std::fs::write(s.path(&format!("stop-{name}")), "").unwrap();
    let out = reader.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)))
}
