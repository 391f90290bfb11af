//! `certgate cert rekey NAME --ca-url URL` against the real online CA: a new key made locally
//! and certified over mTLS (`POST /rekey`), certificate and key switched together in the
//! versioned (Kubernetes atomic-writer) layout, renewal keeping that layout, and a gateway
//! serving the files picking up the new pair.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ca_support;
mod gateway_support;
mod pki_support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ca_support::{ca_serve, cert_request, pair_reader, pair_reader_result, public_key, serial};
use gateway_support::{Gateway, served_serial, upstream, upstream_block};
use pki_support::{Scratch, help_examples, mode, openssl_verify, text};

/// A token for `name` with SAN `san` and `cert request` with `args`.
fn request(s: &Scratch, gw: &Gateway, name: &str, san: &str, args: &[&str]) {
    let token = s.ok(&["ca", "token", name, "--san", san]);
    let mut all = vec!["--root", "root.crt", "--san", san];
    all.extend_from_slice(args);
    let got = cert_request(s, gw, name, token.trim(), &all);
    assert!(got.status.success(), "{}", text(&got));
}

fn link(s: &Scratch, name: &str) -> PathBuf {
    std::fs::read_link(s.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn versions(s: &Scratch, dir: &str) -> usize {
    std::fs::read_dir(s.path(dir)).unwrap().count()
}

/// `cert rekey`: the key changes (openssl sees another public key, matching the new
/// certificate, 0600, of the type asked for), the certificate verifies and keeps its name;
/// the files become links through `.app.data` into `.app.versions/`, with the current and the
/// previous version kept; `cert renew --ca-url` then keeps the layout and the key. A reader
/// that loops on the pair all along never finds a broken file or a mismatched pair.
#[test]
fn rekey_switches_certificate_and_key_together_and_renewal_keeps_the_layout() {
    let s = Scratch::with_ca(&[]);
    let gw = ca_serve(&s, &[]);
    let url = gw.url("");
    request(&s, &gw, "app", "app.example.com", &["--hours", "1"]);
    let old_key = public_key(&s, "app.key", false);
    let old_serial = serial(&s, "app.crt");
    let reader = pair_reader(&s, "app");

    let out = s.ok(&["cert", "rekey", "app", "--ca-url", &url, "--root", "root.crt"]);
    assert!(out.contains("rekeyed app") && out.contains("superseded"), "{out}");
    assert_eq!(link(&s, "app.crt"), PathBuf::from(".app.data/app.crt"));
    assert_eq!(link(&s, "app.key"), PathBuf::from(".app.data/app.key"));
    assert!(link(&s, ".app.data").starts_with(".app.versions"), "{out}");
    let new_key = public_key(&s, "app.key", false);
    assert_ne!(new_key, old_key, "a new key");
    assert_eq!(public_key(&s, "app.crt", true), new_key);
    assert_ne!(serial(&s, "app.crt"), old_serial);
    assert_eq!(mode(&s.path("app.key")), 0o600);
    let verify = openssl_verify(&s, "app.crt", "sslclient");
    assert!(verify.status.success(), "{}", text(&verify));
    let san = text(&s.openssl(&["x509", "-in", "app.crt", "-noout", "-ext", "subjectAltName"]));
    assert!(san.contains("DNS:app.example.com"), "{san}");
    assert_eq!(versions(&s, ".app.versions"), 2, "the converted pair and the new one");

    // Again and again (one with another key type): only the current and previous versions.
    for i in 0..5 {
        let mut args = vec!["cert", "rekey", "app", "--ca-url", &url, "--root", "root.crt"];
        if i == 2 {
            args.extend(["--key-type", "ec-p384"]);
        }
        let out = s.ok(&args);
        assert!(out.contains("rekeyed app"), "{out}");
        assert_eq!(public_key(&s, "app.crt", true), public_key(&s, "app.key", false));
        if i == 2 {
            let pkey = text(&s.openssl(&["pkey", "-in", "app.key", "-noout", "-text"]));
            assert!(pkey.contains("P-384") || pkey.contains("secp384r1"), "{pkey}");
        }
    }
    assert_eq!(versions(&s, ".app.versions"), 2);

    // The superseded certificate's files cannot rekey again: the CA's reason.
    let before = (s.read("app.crt"), s.read("app.key"));
    std::fs::create_dir(s.path("old")).unwrap();
    let version = s.path(".app.versions").read_dir().unwrap().next().unwrap().unwrap().path();
    let current = std::fs::canonicalize(s.path(".app.data")).unwrap();
    let previous = if version == current {
        s.path(".app.versions").read_dir().unwrap().nth(1).unwrap().unwrap().path()
    } else {
        version
    };
    for f in ["app.crt", "app.key"] {
        std::fs::copy(previous.join(f), s.path("old").join(f)).unwrap();
    }
    let refused = s.run(&[
        "cert",
        "rekey",
        "app",
        "--ca-url",
        &url,
        "--root",
        "root.crt",
        "--out-dir",
        "old",
    ]);
    assert!(!refused.status.success());
    assert!(text(&refused).contains(&gw.url("/rekey")), "{}", text(&refused));
    assert_eq!((s.read("app.crt"), s.read("app.key")), before);

    // Renewal on the layout: a new version with the same key, still links.
    let key = s.read("app.key");
    let serial_before = serial(&s, "app.crt");
    let out = s.ok(&["cert", "renew", "app", "--ca-url", &url, "--root", "root.crt"]);
    assert!(out.contains("renewed app"), "{out}");
    assert_eq!(s.read("app.key"), key, "the key is kept");
    assert_ne!(serial(&s, "app.crt"), serial_before);
    assert_eq!(link(&s, "app.crt"), PathBuf::from(".app.data/app.crt"));
    assert_eq!(link(&s, "app.key"), PathBuf::from(".app.data/app.key"));
    assert_eq!(versions(&s, ".app.versions"), 2);

    let seen = pair_reader_result(&s, "app", reader);
    assert_eq!(seen["failures"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["serials"].as_array().unwrap().len(), 8, "{seen}");

    // The examples of `cert rekey --help` run as printed against this CA.
    for example in help_examples(&s, &["cert", "rekey"]) {
        let args: Vec<String> = example
            .iter()
            .map(|w| match w.as_str() {
                url_ if url_.starts_with("https://ca.example.com") => url.clone(),
                "api" => "app".to_string(),
                w => w.to_string(),
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s.ok(&args);
    }
    assert_eq!(public_key(&s, "app.crt", true), public_key(&s, "app.key", false));
}

/// A gateway whose listener certificate is `web.crt`/`web.key` serves the new certificate
/// after a rekey, without a restart: its watcher sees the swap of `.web.data`.
#[test]
fn a_gateway_serving_the_files_reloads_after_a_rekey() {
    let s = Scratch::with_ca(&[]);
    let ca = ca_serve(&s, &[]);
    let url = ca.url("");
    std::fs::create_dir(s.path("gw")).unwrap();
    request(&s, &ca, "web", "localhost", &["--hours", "1", "--out-dir", "gw"]);
    let config = format!(
        "[[listener]]\nlisten = \"127.0.0.1:{{port}}\"\n\
         certificates = [{{ cert = \"web.crt\", key = \"web.key\" }}]\n\
         [listener.client_auth]\nmode = \"off\"\n{}\n[[route]]\nupstream = \"app\"\nclient_cert = \"optional\"\n",
        upstream_block("app", upstream(Duration::ZERO))
    );
    let gw = Gateway::start_with_env(&s.path("gw"), &config, &[("CERTGATE_LOG", "info")]);
    let normalize =
        |serial: String| serial.to_ascii_lowercase().trim_start_matches('0').to_string();
    assert_eq!(normalize(served_serial(&gw)), normalize(serial(&s, "gw/web.crt")));

    for round in 1..=2 {
        let out = s.ok(&[
            "cert",
            "rekey",
            "web",
            "--ca-url",
            &url,
            "--root",
            "root.crt",
            "--out-dir",
            "gw",
        ]);
        assert!(out.contains("rekeyed web"), "{out}");
        let want = normalize(serial(&s, "gw/web.crt"));
        let deadline = Instant::now() + Duration::from_secs(15);
        while normalize(served_serial(&gw)) != want {
            assert!(
                Instant::now() < deadline,
                "round {round}: still serving the old certificate: {}",
                gw.stderr()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(gw.stderr().contains("reloaded"), "{}", gw.stderr());
}
