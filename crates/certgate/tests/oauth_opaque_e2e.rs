//! Opaque (phantom) tokens from the built-in token service: kept by hash in the inventory
//! database across restarts, resolved in-process on an API route, swapped for a JWT before the
//! upstream, bound to the client certificate like any token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gateway_support;

use gateway_support::*;

const CONFIG: &str = r#"
[[listener]]
listen = "127.0.0.1:{port}"
certificates = [{ cert = "server.crt", key = "server.key" }]
[listener.client_auth]
mode = "optional"
trust = ["root.crt"]

[oauth]
issuer = "https://localhost/oauth"
audience = ["https://api.example"]
store = "oauth.db"

[[oauth.signing_key]]
key = "signing.key"
state = "active"

[[oauth.client]]
client_id = "payments"
auth = "tls_client_auth"
ca = ["root.crt"]
tls_client_auth_san_uri = "spiffe://example.org/payments"
scopes = ["accounts:read"]
token_format = "opaque"
introspect = true

[[route]]
path = "/oauth"
upstream = "@oauth"
client_cert = "optional"

[[route]]
path = "/api"
upstream = "@echo"
client_cert = "optional"
[route.token]
issuer = "https://localhost/oauth"
audience = ["https://api.example"]
require_binding = true
scopes = ["accounts:read"]
introspection = { upstream = "@oauth" }
"#;

fn opaque_token(gw: &Gateway) -> String {
    let t = curl_as(
        gw,
        Some("payments"),
        "/oauth/token",
        &["-d", "grant_type=client_credentials", "-d", "client_id=payments"],
    );
    assert_eq!(t.status, 200, "{t:?}");
    let body: serde_json::Value = serde_json::from_str(&t.body).unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

fn call(gw: &Gateway, client: &str, token: &str, http: &str) -> Curl {
    let auth = format!("Authorization: Bearer {token}");
    curl_as(gw, Some(client), "/api/accounts", &[http, "-H", &auth])
}

/// SHA-256 by openssl, an implementation certgate does not share.
mod sha2_free {
    pub fn digest(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut child = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-binary"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(data).unwrap();
        child.wait_with_output().unwrap().stdout
    }
}

#[test]
fn opaque_tokens_are_swapped_for_a_bound_jwt_and_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    pki.client("payments", &["spiffe://example.org/payments"]).write(dir, "payments");
    pki.client("other", &["spiffe://example.org/other"]).write(dir, "other");
    std::fs::write(dir.join("signing.key"), rcgen::KeyPair::generate().unwrap().serialize_pem())
        .unwrap();
    let gw = Gateway::start(dir, CONFIG);
    let token = opaque_token(&gw);
    assert_eq!(token.len(), 43, "256 random bits, base64url: {token}");
    assert!(!token.contains('.'), "not a JWT: {token}");

    for http in ["--http1.1", "--http2"] {
        let ok = call(&gw, "payments", &token, http);
        assert_eq!(ok.status, 200, "{http}: {ok:?}");
        let echoed: serde_json::Value = serde_json::from_str(&ok.body).unwrap();
        let forwarded = echoed["headers"]["authorization"].as_str().unwrap();
        // The upstream sees a JWT, never the opaque token.
        assert!(!forwarded.contains(&token), "{forwarded}");
        let jwt = forwarded.strip_prefix("Bearer ").unwrap();
        assert_eq!(jwt.split('.').count(), 3, "{jwt}");
        assert_eq!(echoed["headers"]["x-token-client-id"], "payments");
        // Stolen: the same opaque token with another valid certificate.
        let stolen = call(&gw, "other", &token, http);
        assert_eq!(stolen.status, 401, "{http}: {stolen:?}");
        assert!(stolen.body.contains("bound to another client certificate"), "{stolen:?}");
    }
    // Unknown tokens are inactive: 401, and introspection says exactly {"active":false}.
    let unknown = call(&gw, "payments", "Zm9vYmFyYmF6cXV4cXV1eA", "--http2");
    assert_eq!(unknown.status, 401, "{unknown:?}");
    assert!(unknown.body.contains("not active"), "{unknown:?}");
    let introspect = |t: &str| {
        curl_as(
            &gw,
            Some("payments"),
            "/oauth/introspect",
            &["-d", "client_id=payments", "-d", &format!("token={t}")],
        )
    };
    assert_eq!(introspect("Zm9vYmFyYmF6cXV4cXV1eA").body, r#"{"active":false}"#);
    let active: serde_json::Value = serde_json::from_str(&introspect(&token).body).unwrap();
    assert_eq!(active["active"], true);
    assert!(active["cnf"]["x5t#S256"].is_string(), "{active}");

    // The database holds the token's hash, never the token, and is private.
    let hash = {
        use sha2_free::digest;
        digest(token.as_bytes())
    };
    let mut db = Vec::new();
    for name in ["oauth.db", "oauth.db-wal"] {
        db.extend(std::fs::read(dir.join(name)).unwrap_or_default());
    }
    assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()), "token stored in clear");
    assert!(db.windows(32).any(|w| w == hash), "the token's SHA-256 is not in the database");
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.join("oauth.db")).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode, 0o600);

    // A restart keeps the token.
    drop(gw);
    let gw = Gateway::start(dir, CONFIG);
    assert_eq!(call(&gw, "payments", &token, "--http2").status, 200);
}
