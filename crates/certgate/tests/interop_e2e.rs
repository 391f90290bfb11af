//! Every key type certgate generates, read by the clients users have: `openssl pkey`,
//! `openssl pkcs12` (both PKCS#12 forms `certgate cert p12` writes), Python's `cryptography`,
//! and curl completing mTLS through `certgate serve`. Each key type is generated once.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gateway_support;

use std::path::Path;
use std::process::{Command, Output};

use gateway_support::{CERTGATE, Gateway, curl_as, listener};

/// Each `--key-type` with what `openssl pkey -text` says about such a key.
const KEY_TYPES: [(&str, &str); 6] = [
    ("ec-p256", "NIST CURVE: P-256"),
    ("ec-p384", "NIST CURVE: P-384"),
    ("ed25519", "ED25519 Private-Key"),
    ("rsa-2048", "Private-Key: (2048 bit"),
    ("rsa-3072", "Private-Key: (3072 bit"),
    ("rsa-4096", "Private-Key: (4096 bit"),
];

fn certgate(dir: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(CERTGATE);
    let out = cmd.current_dir(dir).env("CERTGATE_CA_DIR", "ca").args(args).output().unwrap();
    assert!(out.status.success(), "certgate {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl").current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Loads each key and both PKCS#12 files with Python's `cryptography` and checks that every
/// private key belongs to its certificate; prints `ok NAME` per key type.
const PYTHON_CHECK: &str = r#"
import sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

def public(key):
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

password = open("p12.pass", "rb").read().strip()
for name in sys.argv[1:]:
    key = serialization.load_pem_private_key(open(name + ".key", "rb").read(), None)
    for p12 in (name + ".p12", name + "-legacy.p12"):
        p12_key, cert, chain = pkcs12.load_key_and_certificates(open(p12, "rb").read(), password)
        assert public(p12_key) == public(key), p12
        assert public(cert) == public(key), p12
        assert cert.subject.rfc4514_string() == "CN=" + name, cert.subject
        assert len(chain) >= 1, p12
    print("ok", name)
"#;

/// For every key type: `openssl pkey` reads the key; `openssl pkcs12` extracts the key and the
/// certificate from the default (AES) and the `--legacy` (3DES) PKCS#12, and the extracted key
/// is the certificate's; Python's `cryptography` loads the key and both PKCS#12 files; curl
/// presents the certificate to `certgate serve` (client_auth = "required") and gets 200.
#[test]
fn every_key_type_works_with_openssl_python_and_curl() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    certgate(dir, &["ca", "init"]);
    std::fs::copy(dir.join("ca/root.crt"), dir.join("root.crt")).unwrap();
    certgate(dir, &["cert", "issue", "server", "--san", "localhost", "--san", "127.0.0.1"]);
    std::fs::write(dir.join("p12.pass"), "interop pass\n").unwrap();

    for (key_type, pkey_text) in KEY_TYPES {
        let san = format!("spiffe://example.test/{key_type}");
        certgate(dir, &["cert", "issue", key_type, "--san", &san, "--key-type", key_type]);
        let key = openssl(dir, &["pkey", "-in", &format!("{key_type}.key"), "-noout", "-text"]);
        assert!(key.contains(pkey_text), "{key_type}: {key}");

        let cert_pub = openssl(dir, &["x509", "-in", &format!("{key_type}.crt"), "-pubkey"]);
        let cert_pub = cert_pub.split("-----BEGIN CERTIFICATE").next().unwrap().to_string();
        for (file, legacy) in
            [(format!("{key_type}.p12"), false), (format!("{key_type}-legacy.p12"), true)]
        {
            let mut args = vec!["cert", "p12", key_type, "--password-file", "p12.pass"];
            args.extend(["--out", &file]);
            if legacy {
                args.push("--legacy");
            }
            certgate(dir, &args);
            let mut read = vec!["pkcs12", "-in", &file, "-passin", "file:p12.pass", "-noenc"];
            if legacy {
                read.push("-legacy");
            }
            let extracted = openssl(dir, &read);
            assert!(extracted.contains("-----BEGIN PRIVATE KEY-----"), "{file}: {extracted}");
            assert!(extracted.contains(&format!("subject=CN = {key_type}")), "{file}: {extracted}");
            std::fs::write(dir.join("extracted.pem"), &extracted).unwrap();
            let key_pub = openssl(dir, &["pkey", "-in", "extracted.pem", "-pubout"]);
            assert_eq!(key_pub, cert_pub, "{file}: the extracted key is the certificate's");
        }
    }

    let names: Vec<&str> = KEY_TYPES.iter().map(|(k, _)| *k).collect();
    let python = Command::new("python3")
        .current_dir(dir)
        .arg("-c")
        .arg(PYTHON_CHECK)
        .args(&names)
        .output()
        .unwrap();
    assert!(python.status.success(), "python cryptography: {}", text(&python));
    for name in &names {
        assert!(text(&python).contains(&format!("ok {name}\n")), "{}", text(&python));
    }

    let config = format!("{}\n[[route]]\nupstream = \"@echo\"\n", listener("required", ""));
    let gw = Gateway::start(dir, &config);
    for name in &names {
        let r = curl_as(&gw, Some(name), "/", &[]);
        assert_eq!((r.exit, r.status), (0, 200), "{name}: {r:?}");
        assert!(r.body.contains(&format!("spiffe://example.test/{name}")), "{name}: {r:?}");
    }
    let anonymous = curl_as(&gw, None, "/", &[]);
    assert_ne!(anonymous.status, 200, "without a certificate: {anonymous:?}");
}
