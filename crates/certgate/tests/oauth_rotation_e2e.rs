//! Signing-key rotation of the token service across live reloads: a `next` key is published
//! before it signs; once active, the retired key stays published (and its tokens accepted)
//! until it is removed; tokens then carry the new key's kid.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gateway_support;

use gateway_support::*;
use std::path::Path;

fn config(keys: &[(&str, &str)]) -> String {
    let mut text = String::from(
        r#"
[[listener]]
listen = "127.0.0.1:{port}"
certificates = [{ cert = "server.crt", key = "server.key" }]
[listener.client_auth]
mode = "optional"
trust = ["root.crt"]

[oauth]
issuer = "https://localhost/oauth"
audience = ["https://api.example"]
"#,
    );
    for (file, state) in keys {
        text.push_str(&format!("\n[[oauth.signing_key]]\nkey = \"{file}\"\nstate = \"{state}\"\n"));
    }
    text.push_str(
        r#"
[[oauth.client]]
client_id = "payments"
auth = "tls_client_auth"
ca = ["root.crt"]
tls_client_auth_san_uri = "spiffe://example.org/payments"

[[route]]
path = "/oauth"
upstream = "@oauth"
client_cert = "optional"

[[route]]
path = "/api"
upstream = "@echo"
[route.token]
issuer = "https://localhost/oauth"
audience = ["https://api.example"]
require_binding = true
"#,
    );
    text
}

fn kids(gw: &Gateway) -> Vec<String> {
    let jwks = curl_as(gw, None, "/oauth/jwks", &[]);
    assert_eq!(jwks.status, 200, "{jwks:?}");
    let doc: serde_json::Value = serde_json::from_str(&jwks.body).unwrap();
    let mut kids: Vec<String> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    kids.sort();
    kids
}

/// A token and the kid in its header.
fn token(gw: &Gateway) -> (String, String) {
    let t = curl_as(
        gw,
        Some("payments"),
        "/oauth/token",
        &["-d", "grant_type=client_credentials", "-d", "client_id=payments"],
    );
    assert_eq!(t.status, 200, "{t:?}");
    let body: serde_json::Value = serde_json::from_str(&t.body).unwrap();
    let token = body["access_token"].as_str().unwrap().to_string();
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    (token, header["kid"].as_str().unwrap().to_string())
}

fn api_status(gw: &Gateway, token: &str) -> u16 {
    let auth = format!("Authorization: Bearer {token}");
    curl_as(gw, Some("payments"), "/api/x", &["-H", &auth]).status
}

/// Writes the configuration with `keys` and reloads (the file watcher may beat SIGHUP to
/// it), then waits until the JWKS publishes `published` keys.
fn reload(gw: &Gateway, dir: &Path, keys: &[(&str, &str)], published: usize) {
    std::fs::write(dir.join("certgate.toml"), config(keys).replace("{port}", "0")).unwrap();
    gw.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while kids(gw).len() != published {
        assert!(std::time::Instant::now() < deadline, "no reload to {keys:?}: {}", gw.stderr());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn signing_keys_rotate_without_refusing_tokens_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    pki.client("payments", &["spiffe://example.org/payments"]).write(dir, "payments");
    for name in ["old.key", "new.key"] {
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.join(name), key.serialize_pem()).unwrap();
    }
    let gw = Gateway::start_with_env(
        dir,
        &config(&[("old.key", "active"), ("new.key", "next")]),
        &[("CERTGATE_LOG", "info")],
    );
    // The next key is published before it signs anything.
    assert_eq!(kids(&gw).len(), 2);
    let (old_token, old_kid) = token(&gw);
    assert_eq!(api_status(&gw, &old_token), 200);

    // Rotate: the new key signs, the old one stays published and its tokens still pass.
    reload(&gw, dir, &[("old.key", "retired"), ("new.key", "active")], 2);
    // The retired key still verifies: the first token's new kid says the reload is done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while token(&gw).1 == old_kid {
        assert!(std::time::Instant::now() < deadline, "the new key never became active");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let published = kids(&gw);
    assert_eq!(published.len(), 2, "{published:?}");
    assert!(published.contains(&old_kid));
    let (new_token, new_kid) = token(&gw);
    assert_ne!(new_kid, old_kid);
    assert_eq!(api_status(&gw, &old_token), 200);
    assert_eq!(api_status(&gw, &new_token), 200);

    // Removed: the old key is gone from the JWKS, and a token it signed is refused.
    reload(&gw, dir, &[("new.key", "active")], 1);
    assert_eq!(kids(&gw), vec![new_kid]);
    assert_eq!(api_status(&gw, &old_token), 401);
    assert_eq!(api_status(&gw, &new_token), 200);

    // Two active keys: refused with the reason, the running state keeps serving.
    std::fs::write(
        dir.join("certgate.toml"),
        config(&[("old.key", "active"), ("new.key", "active")]).replace("{port}", "0"),
    )
    .unwrap();
    gw.signal("HUP");
    let log = gw.wait_for_log("2 signing keys are active", 1);
    assert!(log.contains("oauth.signing_key"), "{log}");
    assert_eq!(api_status(&gw, &new_token), 200);
}
