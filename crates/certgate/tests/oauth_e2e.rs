//! End-to-end tests of the OAuth features: the built-in token service (`[oauth]`, reached by
//! routes with `upstream = "@oauth"`) and the per-route access-token check (`[route.token]`).
//! The real binary is driven with curl over HTTP/1.1 and HTTP/2; tokens and metadata are
//! checked by other people's code (PyJWT, Authlib, Python's cryptography and openssl, in
//! `tests/support/oauth.py`), and a stand-in remote authorization server
//! (`tests/support/fake_as.py`) answers the phantom-token introspections.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gateway_support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use gateway_support::*;
use serde_json::Value;
use tempfile::TempDir;

const ISSUER: &str = "https://localhost:9443/oauth";
const AUDIENCE: &str = "https://api.example.com";
/// A foreign issuer whose tokens PyJWT mints with `test-signer.key` (published in `test.jwks`).
const TEST_ISSUER: &str = "https://as.test.example";
const TEST_KID: &str = "test-signer-1";
const OAUTH_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/oauth.py");
const FAKE_AS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/fake_as.py");
/// The two HTTP versions every request-path rule is checked over.
const VERSIONS: [&str; 2] = ["--http1.1", "--http2"];
/// The token service's clients issued by the test PKI (SAN `spiffe://example.org/NAME`).
const PKI_CLIENTS: [&str; 4] = ["payments", "other", "introspector", "shortlived"];

/// A gateway with the token service and the routes below, in its own directory.
struct OAuth {
    gw: Gateway,
    _tmp: TempDir,
}

/// Writes the test PKI, the signing keys, the self-signed client certificates and the JWKS
/// files into `dir`.
fn prepare(dir: &Path) {
    let pki = pki_in(dir);
    for name in PKI_CLIENTS {
        pki.client(name, &[&format!("spiffe://example.org/{name}")]).write(dir, name);
    }
    for key in ["signing.key", "test-signer.key"] {
        openssl(dir, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], key);
    }
    // Self-signed client certificates as openssl makes them.
    for name in ["self1", "self2", "stranger"] {
        let out = run(Command::new("openssl").current_dir(dir).args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=clientAuth",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ]));
        assert!(out.status.success(), "openssl req: {}", String::from_utf8_lossy(&out.stderr));
    }
    // The JWKS files, with the keys as openssl reads them.
    let mut signer = ec_jwk(dir, "openssl pkey -in test-signer.key -pubout -outform DER");
    signer.insert("kid".into(), TEST_KID.into());
    signer.insert("alg".into(), "ES256".into());
    signer.insert("use".into(), "sig".into());
    write_jwks(dir, "test.jwks", signer);
    let mut self2 =
        ec_jwk(dir, "openssl x509 -in self2.crt -noout -pubkey | openssl pkey -pubin -outform DER");
    let der = sh(dir, "openssl x509 -in self2.crt -outform DER");
    self2.insert("x5c".into(), serde_json::json!([STANDARD.encode(der)]));
    write_jwks(dir, "self2.jwks", self2);
}

/// The stdout of `sh -c SCRIPT` in `dir`, which must succeed.
fn sh(dir: &Path, script: &str) -> Vec<u8> {
    let out = run(Command::new("sh").current_dir(dir).args(["-c", script]));
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The JWK members of the P-256 public key whose DER SubjectPublicKeyInfo `script` prints.
fn ec_jwk(dir: &Path, script: &str) -> serde_json::Map<String, Value> {
    let spki = sh(dir, script);
    // The SPKI ends with the uncompressed point: 0x04 || x || y.
    let point = &spki[spki.len() - 65..];
    assert_eq!((spki.len(), point[0]), (91, 4), "not a P-256 key: {script}");
    let jwk = serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    });
    jwk.as_object().unwrap().clone()
}

/// Writes `{"keys": [jwk]}` to `dir/name`.
fn write_jwks(dir: &Path, name: &str, jwk: serde_json::Map<String, Value>) {
    let doc = serde_json::json!({ "keys": [jwk] });
    std::fs::write(dir.join(name), doc.to_string()).unwrap();
}

/// `openssl ARGS -out OUT` in `dir`.
fn openssl(dir: &Path, args: &[&str], out: &str) {
    let o = run(Command::new("openssl").current_dir(dir).args(args).args(["-out", out]));
    assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// `tests/support/oauth.py ARGS` in `dir`: its stdout, trimmed.
fn python(dir: &Path, args: &[&str]) -> String {
    let out = run(Command::new("python3").current_dir(dir).arg("-B").arg(OAUTH_PY).args(args));
    assert!(
        out.status.success(),
        "oauth.py {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The configuration: a listener asking for (but not requiring) client certificates and
/// trusting `trust`, the token service with its clients, its routes, and the API routes:
///
/// - `/api`: tokens of the built-in service, scope `accounts:read`, binding required;
/// - `/write`: the same, scope `accounts:write`;
/// - `/short`: the same with a leeway of 1 s;
/// - `/strict` and `/loose`: tokens of [`TEST_ISSUER`] (keys in `test.jwks`), with and
///   without `require_binding`.
///
/// `extra` is appended (more clients, upstreams, routes).
fn config(trust: &str, extra: &str) -> String {
    let mut clients = String::new();
    for name in PKI_CLIENTS {
        let scopes = if name == "payments" {
            "scopes = [\"accounts:read\", \"accounts:write\"]\ndefault_scopes = [\"accounts:read\"]"
        } else {
            "scopes = [\"accounts:read\"]"
        };
        let more = match name {
            "introspector" => "introspect = true",
            "shortlived" => "token_lifetime = \"2s\"",
            _ => "",
        };
        clients.push_str(&format!(
            r#"
[[oauth.client]]
client_id = "{name}"
auth = "tls_client_auth"
ca = ["root.crt"]
tls_client_auth_san_uri = "spiffe://example.org/{name}"
{scopes}
{more}
"#
        ));
    }
    let route = |path: &str, check: &str| {
        format!("\n[[route]]\npath = \"{path}\"\nupstream = \"@echo\"\n[route.token]\n{check}\n")
    };
    let local =
        format!("issuer = \"{ISSUER}\"\naudience = [\"{AUDIENCE}\"]\nrequire_binding = true");
    let foreign =
        format!("issuer = \"{TEST_ISSUER}\"\naudience = [\"{AUDIENCE}\"]\njwks = \"test.jwks\"");
    format!(
        r#"
[[listener]]
listen = "127.0.0.1:{{port}}"
certificates = [{{ cert = "server.crt", key = "server.key" }}]
[listener.client_auth]
mode = "optional"
trust = [{trust}]

[oauth]
issuer = "{ISSUER}"
audience = ["{AUDIENCE}"]

[[oauth.signing_key]]
key = "signing.key"
state = "active"
{clients}
[[oauth.client]]
client_id = "self-certs"
auth = "self_signed_tls_client_auth"
certificates = ["self1.crt"]
scopes = ["accounts:read"]

[[oauth.client]]
client_id = "self-jwks"
auth = "self_signed_tls_client_auth"
jwks = "self2.jwks"
scopes = ["accounts:read"]

[[route]]
path = "/oauth"
upstream = "@oauth"
client_cert = "optional"

[[route]]
path = "/.well-known"
upstream = "@oauth"
client_cert = "optional"
{api}{write}{short}{strict}{loose}{extra}"#,
        api = route("/api", &format!("{local}\nscopes = [\"accounts:read\"]")),
        write = route("/write", &format!("{local}\nscopes = [\"accounts:write\"]")),
        short = route("/short", &format!("{local}\nleeway = \"1s\"")),
        strict = route("/strict", &format!("{foreign}\nrequire_binding = true")),
        loose = route("/loose", &foreign),
    )
}

/// A prepared directory and a gateway on [`config`] with `extra`.
fn start(extra: &str) -> OAuth {
    let tmp = tempfile::tempdir().unwrap();
    prepare(tmp.path());
    let gw = Gateway::start(tmp.path(), &config("\"root.crt\"", extra));
    OAuth { gw, _tmp: tmp }
}

/// One answer, with its headers.
#[derive(Debug)]
struct Resp {
    status: u16,
    /// `1.1` or `2`.
    version: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    /// The `WWW-Authenticate` challenge (which must be there).
    fn challenge(&self) -> &str {
        self.header("www-authenticate").unwrap_or_else(|| panic!("no WWW-Authenticate: {self:?}"))
    }

    /// Asserts an RFC 6749 section 5.2 error answer: `status`, `error` = `code`, the
    /// description containing `says`, and the no-store headers.
    fn assert_oauth_error(&self, status: u16, code: &str, says: &str) {
        assert_eq!(self.status, status, "{self:?}");
        let v = self.json();
        assert_eq!(v["error"], code, "{self:?}");
        let description = v["error_description"].as_str().unwrap_or_default();
        assert!(description.contains(says), "{description:?} lacks {says:?}");
        self.assert_no_store();
    }

    fn assert_no_store(&self) {
        assert_eq!(self.header("cache-control"), Some("no-store"), "{self:?}");
        assert_eq!(self.header("pragma"), Some("no-cache"), "{self:?}");
    }

    /// Asserts a 401 `invalid_token` challenge whose description contains `says`.
    fn assert_invalid_token(&self, says: &str) {
        assert_eq!(self.status, 401, "{self:?}");
        let c = self.challenge();
        assert!(c.starts_with("Bearer realm=\"api\""), "{c}");
        assert!(c.contains("error=\"invalid_token\""), "{c}");
        assert!(c.contains(says), "{c} lacks {says:?}");
    }
}

/// curl to the gateway's `path` as `client` with `args` (`http` first: the HTTP version),
/// keeping the answer's headers.
fn request(gw: &Gateway, client: Option<&str>, path: &str, http: &str, args: &[&str]) -> Resp {
    static N: AtomicUsize = AtomicUsize::new(0);
    let file = gw.dir.join(format!("headers-{}.txt", N.fetch_add(1, Ordering::SeqCst)));
    let file_arg = file.display().to_string();
    let mut all = vec![http, "-D", file_arg.as_str()];
    all.extend_from_slice(args);
    let c = curl_as(gw, client, path, &all);
    assert_eq!(c.exit, 0, "curl {path}: {}", c.stderr);
    let text = std::fs::read_to_string(&file).unwrap();
    // The last head (after any 100 Continue).
    let head = text.trim_end().rsplit("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let version = status_line.split(' ').next().unwrap_or_default().trim_start_matches("HTTP/");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let resp = Resp { status: c.status, version: version.to_string(), headers, body: c.body };
    let wanted = if http == "--http1.1" { "1.1" } else { "2" };
    assert_eq!(resp.version, wanted, "{http}: {resp:?}");
    resp
}

/// POSTs the form `form` (already encoded) to `path` as `client`.
fn post(gw: &Gateway, client: Option<&str>, path: &str, http: &str, form: &str) -> Resp {
    request(gw, client, path, http, &["--data", form])
}

/// POSTs to the token endpoint.
fn token_request(gw: &Gateway, client: Option<&str>, http: &str, form: &str) -> Resp {
    post(gw, client, "/oauth/token", http, form)
}

/// A client-credentials token for `client` (whose client_id is its name).
fn issue(gw: &Gateway, client: &str) -> String {
    let form = format!("grant_type=client_credentials&client_id={client}");
    let resp = token_request(gw, Some(client), "--http2", &form);
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.json()["access_token"].as_str().unwrap().to_string()
}

/// A GET of `path` as `client` with `Authorization: Bearer TOKEN`.
fn call(gw: &Gateway, client: Option<&str>, path: &str, http: &str, token: &str) -> Resp {
    let auth = format!("Authorization: Bearer {token}");
    request(gw, client, path, http, &["-H", &auth])
}

/// A JWT's header and claims, decoded without verification.
fn decode(jwt: &str) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWS: {jwt}");
    let part =
        |s: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap() };
    (part(parts[0]), part(parts[1]))
}

/// base64url(SHA-256(DER)) of `dir/NAME.crt`'s first certificate, computed by openssl.
fn openssl_x5t(dir: &Path, name: &str) -> String {
    let script = format!("openssl x509 -in {name}.crt -outform DER | openssl dgst -sha256 -binary");
    let digest = sh(dir, &script);
    assert_eq!(digest.len(), 32, "{script}");
    URL_SAFE_NO_PAD.encode(digest)
}

/// A token for [`TEST_ISSUER`] and [`AUDIENCE`] minted by PyJWT, with `args` added (a later
/// `--iss` or `--aud` replaces those).
fn mint(gw: &Gateway, args: &[&str]) -> String {
    let mut all = vec!["mint", "--key", "test-signer.key", "--kid", TEST_KID];
    all.extend_from_slice(&["--iss", TEST_ISSUER, "--aud", AUDIENCE]);
    all.extend_from_slice(args);
    python(&gw.dir, &all)
}

// ---------------------------------------------------------------------------------------
// 1. The token endpoint.

/// A registered client with its certificate gets a certificate-bound at+jwt (RFC 9068,
/// RFC 8705) in an RFC 6749 section 5.1 answer that no cache may keep.
#[test]
fn token_endpoint_issues_a_bound_jwt_that_no_cache_keeps() {
    let o = start("");
    let x5t = openssl_x5t(&o.gw.dir, "payments");
    for http in VERSIONS {
        let form = "grant_type=client_credentials&client_id=payments";
        let resp = token_request(&o.gw, Some("payments"), http, form);
        assert_eq!(resp.status, 200, "{resp:?}");
        resp.assert_no_store();
        assert!(resp.header("content-type").unwrap_or("").starts_with("application/json"));
        let v = resp.json();
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(v["scope"], "accounts:read", "the default scopes");
        let expires_in = v["expires_in"].as_u64().unwrap();
        assert!((299..=300).contains(&expires_in), "{expires_in}");
        let (header, claims) = decode(v["access_token"].as_str().unwrap());
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(header["alg"], "ES256");
        assert!(header["kid"].as_str().is_some_and(|k| k.len() == 43), "{header}");
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["sub"], "payments");
        assert_eq!(claims["client_id"], "payments");
        assert_eq!(claims["aud"], AUDIENCE, "one audience, as a string: {claims}");
        assert_eq!(claims["scope"], "accounts:read");
        assert_eq!(claims["cnf"]["x5t#S256"], x5t.as_str(), "bound to the payments certificate");
        let (iat, exp) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64().unwrap());
        assert_eq!(exp - iat, expires_in);
        assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    }
}

/// Only the client-credentials grant is served: another one is `unsupported_grant_type`.
#[test]
fn token_endpoint_refuses_another_grant_type() {
    let o = start("");
    for http in VERSIONS {
        let form = "grant_type=password&client_id=payments&username=a&password=b";
        let resp = token_request(&o.gw, Some("payments"), http, form);
        resp.assert_oauth_error(400, "unsupported_grant_type", "client_credentials");
    }
}

/// A request without grant_type is `invalid_request`.
#[test]
fn token_endpoint_refuses_a_request_without_grant_type() {
    let o = start("");
    for http in VERSIONS {
        let resp = token_request(&o.gw, Some("payments"), http, "client_id=payments");
        resp.assert_oauth_error(400, "invalid_request", "grant_type");
    }
}

/// mTLS client authentication names the client (RFC 8705 section 2): no client_id is
/// `invalid_request`.
#[test]
fn token_endpoint_refuses_a_request_without_client_id() {
    let o = start("");
    for http in VERSIONS {
        let form = "grant_type=client_credentials";
        let resp = token_request(&o.gw, Some("payments"), http, form);
        resp.assert_oauth_error(400, "invalid_request", "client_id");
    }
}

/// A client_id nobody registered is `invalid_client` (401).
#[test]
fn token_endpoint_refuses_an_unknown_client() {
    let o = start("");
    for http in VERSIONS {
        let form = "grant_type=client_credentials&client_id=nobody";
        let resp = token_request(&o.gw, Some("payments"), http, form);
        resp.assert_oauth_error(401, "invalid_client", "unknown client");
    }
}

/// A client that presents no certificate is not authenticated: `invalid_client` (401).
#[test]
fn token_endpoint_refuses_a_client_without_a_certificate() {
    let o = start("");
    for http in VERSIONS {
        let form = "grant_type=client_credentials&client_id=payments";
        let resp = token_request(&o.gw, None, http, form);
        resp.assert_oauth_error(401, "invalid_client", "not provided");
    }
}

/// A certificate from the client's CA with another subject value (another client's) does not
/// authenticate it.
#[test]
fn token_endpoint_refuses_a_certificate_with_another_subject_value() {
    let o = start("");
    for http in VERSIONS {
        let form = "grant_type=client_credentials&client_id=payments";
        let resp = token_request(&o.gw, Some("other"), http, form);
        resp.assert_oauth_error(401, "invalid_client", "does not match");
    }
}

/// A client is pinned to its CA's key, not its name: a second `certgate ca init` with the
/// same name (another key) issuing a certificate with the same SAN cannot get its tokens.
#[test]
fn token_endpoint_refuses_a_same_name_ca_with_another_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    prepare(dir);
    for ca in ["ca-a", "ca-b"] {
        let home = dir.join(ca);
        std::fs::create_dir(&home).unwrap();
        let cli = |args: &[&str]| {
            let out =
                run(Command::new(CERTGATE).current_dir(&home).args(args).args(["--ca-dir", "ca"]));
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        cli(&["ca", "init", "--name", "Same Name Root CA"]);
        cli(&["cert", "issue", "samename", "--san", "spiffe://example.org/samename"]);
    }
    // The two roots have one name and two keys.
    let field = |ca: &str, what: &str| {
        let out = run(Command::new("openssl").current_dir(dir).args([
            "x509",
            "-noout",
            what,
            "-in",
            &format!("{ca}/ca/root.crt"),
        ]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(field("ca-a", "-subject"), field("ca-b", "-subject"));
    assert_ne!(field("ca-a", "-pubkey"), field("ca-b", "-pubkey"));
    for (from, to) in [("ca-a", "samename"), ("ca-b", "impostor")] {
        for ext in ["crt", "key"] {
            std::fs::copy(
                dir.join(format!("{from}/samename.{ext}")),
                dir.join(format!("{to}.{ext}")),
            )
            .unwrap();
        }
    }
    let client = r#"
[[oauth.client]]
client_id = "samename"
auth = "tls_client_auth"
ca = ["ca-a/ca/root.crt"]
tls_client_auth_san_uri = "spiffe://example.org/samename"
scopes = ["accounts:read"]
"#;
    let gw = Gateway::start(dir, &config("\"root.crt\", \"ca-a/ca/root.crt\"", client));
    let form = "grant_type=client_credentials&client_id=samename";
    for http in VERSIONS {
        let resp = token_request(&gw, Some("samename"), http, form);
        assert_eq!(resp.status, 200, "the genuine certificate: {resp:?}");
        let resp = token_request(&gw, Some("impostor"), http, form);
        resp.assert_oauth_error(401, "invalid_client", "does not chain to the CA registered");
    }
}

/// A parameter sent twice is ambiguous: `invalid_request` (RFC 6749 section 3.2).
#[test]
fn token_endpoint_refuses_a_repeated_parameter() {
    let o = start("");
    for http in VERSIONS {
        let form = "grant_type=client_credentials&client_id=payments&scope=accounts:read\
                    &scope=accounts:write";
        let resp = token_request(&o.gw, Some("payments"), http, form);
        resp.assert_oauth_error(400, "invalid_request", "scope is sent more than once");
    }
}

/// A scope the client is not registered for is `invalid_scope`; its own scopes are granted.
#[test]
fn token_endpoint_refuses_a_scope_the_client_lacks() {
    let o = start("");
    for http in VERSIONS {
        let form = "grant_type=client_credentials&client_id=other&scope=accounts:write";
        let resp = token_request(&o.gw, Some("other"), http, form);
        resp.assert_oauth_error(400, "invalid_scope", "accounts:write");
        let form = "grant_type=client_credentials&client_id=payments&scope=accounts:write";
        let resp = token_request(&o.gw, Some("payments"), http, form);
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.json()["scope"], "accounts:write");
    }
}

/// Clients authenticate with their certificate only: a client_secret or a Basic
/// Authorization header as well is a second method, `invalid_request` (RFC 6749 section 2.3).
#[test]
fn token_endpoint_refuses_a_second_authentication_method() {
    let o = start("");
    let form = "grant_type=client_credentials&client_id=payments";
    for http in VERSIONS {
        let with_secret = format!("{form}&client_secret=s3cret");
        let resp = token_request(&o.gw, Some("payments"), http, &with_secret);
        resp.assert_oauth_error(400, "invalid_request", "more than one client authentication");
        let args = ["--data", form, "-u", "payments:s3cret"];
        let resp = request(&o.gw, Some("payments"), "/oauth/token", http, &args);
        resp.assert_oauth_error(400, "invalid_request", "more than one client authentication");
    }
}

/// The token endpoint reads application/x-www-form-urlencoded only (RFC 6749 section 4.4.2).
#[test]
fn token_endpoint_refuses_a_body_that_is_not_a_form() {
    let o = start("");
    for http in VERSIONS {
        let args = [
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"grant_type":"client_credentials","client_id":"payments"}"#,
        ];
        let resp = request(&o.gw, Some("payments"), "/oauth/token", http, &args);
        resp.assert_oauth_error(400, "invalid_request", "x-www-form-urlencoded");
    }
}

/// The token endpoint is POST only: GET is 405 with `Allow: POST`.
#[test]
fn token_endpoint_answers_get_with_405_allow_post() {
    let o = start("");
    for http in VERSIONS {
        let resp = request(&o.gw, Some("payments"), "/oauth/token", http, &[]);
        assert_eq!(resp.status, 405, "{resp:?}");
        assert_eq!(resp.header("allow"), Some("POST"));
    }
}

/// self_signed_tls_client_auth (RFC 8705 section 2.2): a client registered by its
/// certificate file, and one registered by a JWKS with x5c, authenticate with those
/// openssl-made self-signed certificates, and their tokens are bound to them.
#[test]
fn self_signed_clients_registered_by_certificate_or_jwks_get_tokens() {
    let o = start("");
    for (client, cert) in [("self-certs", "self1"), ("self-jwks", "self2")] {
        let x5t = openssl_x5t(&o.gw.dir, cert);
        for http in VERSIONS {
            let form = format!("grant_type=client_credentials&client_id={client}");
            let resp = token_request(&o.gw, Some(cert), http, &form);
            assert_eq!(resp.status, 200, "{client}: {resp:?}");
            let (_, claims) = decode(resp.json()["access_token"].as_str().unwrap());
            assert_eq!(claims["sub"], client);
            assert_eq!(claims["cnf"]["x5t#S256"], x5t.as_str());
        }
    }
}

/// A self-signed certificate that is not registered for the client is `invalid_client`,
/// and so is a registered one presented for the other self-signed client.
#[test]
fn self_signed_client_with_an_unregistered_certificate_is_refused() {
    let o = start("");
    for http in VERSIONS {
        for (client, cert) in [("self-certs", "stranger"), ("self-jwks", "self1")] {
            let form = format!("grant_type=client_credentials&client_id={client}");
            let resp = token_request(&o.gw, Some(cert), http, &form);
            resp.assert_oauth_error(401, "invalid_client", "unregistered client certificate");
        }
    }
}

/// The JWKS and metadata answer HEAD with their GET headers and no body, over HTTP/2 too
/// (where a body on a HEAD stream makes clients reset it); so do the gateway's refusals.
#[test]
fn jwks_and_metadata_answer_head_without_a_body() {
    let o = start("");
    for path in ["/oauth/jwks", "/.well-known/oauth-authorization-server/oauth"] {
        for http in VERSIONS {
            let get = request(&o.gw, None, path, http, &[]);
            assert_eq!(get.status, 200, "{get:?}");
            let head = request(&o.gw, None, path, http, &["-I"]);
            assert_eq!(head.status, 200, "{head:?}");
            assert_eq!(head.header("content-type"), Some("application/json"));
            let length = get.body.len().to_string();
            assert_eq!(head.header("content-length"), Some(length.as_str()), "{head:?}");
        }
    }
    for http in VERSIONS {
        let head = request(&o.gw, Some("payments"), "/api/accounts", http, &["-I"]);
        assert_eq!(head.status, 401, "{head:?}");
        assert_eq!(head.challenge(), "Bearer realm=\"api\"");
    }
}

/// A form over the token endpoint's limit is `invalid_request`, and the answer reaches the
/// client over HTTP/2 too while it is still sending (the rest is read, not reset).
#[test]
fn token_endpoint_refuses_an_oversized_form() {
    let o = start("");
    // Well over the limit, within what the gateway reads of a refused body (256 KiB).
    let form =
        format!("grant_type=client_credentials&client_id=payments&x={}", "a".repeat(200_000));
    std::fs::write(o.gw.dir.join("big-form.txt"), form).unwrap();
    let file = format!("@{}", o.gw.dir.join("big-form.txt").display());
    // At 1 MB/s the client is still sending when the refusal is ready (a reset would beat
    // the answer) and done well within the second the gateway reads a refused body for.
    for http in VERSIONS {
        let args = ["--data", &file, "--limit-rate", "1M"];
        let resp = request(&o.gw, Some("payments"), "/oauth/token", http, &args);
        resp.assert_oauth_error(400, "invalid_request", "larger than 16384 bytes");
    }
}

// ---------------------------------------------------------------------------------------
// 2. Interoperability.

/// PyJWT verifies an issued token with the JWKS it fetched from the gateway (signature, typ,
/// iss, aud); the kid is the key's RFC 7638 thumbprint, and cnf.x5t#S256 is the thumbprint of
/// the client certificate as Python's cryptography computes it.
#[test]
fn pyjwt_verifies_an_issued_token_with_the_gateway_jwks() {
    let o = start("");
    let token = issue(&o.gw, "payments");
    let out = python(
        &o.gw.dir,
        &[
            "verify",
            "--jwks-url",
            &o.gw.url("/oauth/jwks"),
            "--ca",
            "root.crt",
            "--token",
            &token,
            "--cert",
            "payments.crt",
            "--iss",
            ISSUER,
            "--aud",
            AUDIENCE,
        ],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["header"]["typ"], "at+jwt");
    assert_eq!(v["header"]["kid"], v["kid_thumbprint"], "kid is the RFC 7638 thumbprint");
    assert_eq!(v["claims"]["iss"], ISSUER);
    assert_eq!(v["claims"]["cnf"]["x5t#S256"], v["x5t"]);
    assert_eq!(v["x5t"], openssl_x5t(&o.gw.dir, "payments").as_str());
}

/// Authlib's RFC 8414 validation accepts the metadata; the issuer is byte-identical to the
/// configured one, certificate-bound tokens are announced and the mTLS aliases are there.
#[test]
fn authlib_accepts_the_rfc_8414_metadata() {
    let o = start("");
    let url = o.gw.url("/.well-known/oauth-authorization-server/oauth");
    let out = python(&o.gw.dir, &["metadata", "--url", &url, "--ca", "root.crt"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["error"], Value::Null, "Authlib refused the metadata: {out}");
    let doc = &v["doc"];
    assert_eq!(doc["issuer"], ISSUER);
    assert_eq!(doc["response_types_supported"], serde_json::json!(["none"]));
    assert_eq!(doc["tls_client_certificate_bound_access_tokens"], true);
    assert_eq!(doc["token_endpoint"], format!("{ISSUER}/token"));
    assert_eq!(doc["mtls_endpoint_aliases"]["token_endpoint"], format!("{ISSUER}/token"));
    assert_eq!(
        doc["mtls_endpoint_aliases"]["introspection_endpoint"],
        format!("{ISSUER}/introspect")
    );
    let raw = request(&o.gw, None, "/.well-known/oauth-authorization-server/oauth", "--http2", &[]);
    assert!(raw.body.contains(&format!("\"issuer\":\"{ISSUER}\"")), "{}", raw.body);
}

// ---------------------------------------------------------------------------------------
// 3. The route's token check.

/// A bound token with its own certificate reaches the upstream, which gets the verified
/// claims as X-Token-* headers; forged inbound copies are gone.
#[test]
fn bound_token_with_its_certificate_reaches_the_upstream_with_token_headers() {
    let o = start("");
    let token = issue(&o.gw, "payments");
    let (_, claims) = decode(&token);
    for http in VERSIONS {
        let auth = format!("Authorization: Bearer {token}");
        let args = ["-H", &auth, "-H", "X-Token-Sub: admin", "-H", "X-Token-Scope: everything"];
        let resp = request(&o.gw, Some("payments"), "/api/accounts", http, &args);
        assert_eq!(resp.status, 200, "{resp:?}");
        let headers = &resp.json()["headers"];
        assert_eq!(headers["x-token-sub"], "payments", "{headers}");
        assert_eq!(headers["x-token-client-id"], "payments");
        assert_eq!(headers["x-token-scope"], "accounts:read");
        assert_eq!(headers["x-token-jti"], claims["jti"]);
        assert_eq!(headers["authorization"], format!("Bearer {token}"), "a JWT is not swapped");
    }
}

/// Proof of possession: the same token over a connection with another valid certificate is
/// `invalid_token`.
#[test]
fn bound_token_with_another_certificate_is_invalid_token() {
    let o = start("");
    let token = issue(&o.gw, "payments");
    for http in VERSIONS {
        let resp = call(&o.gw, Some("other"), "/api/accounts", http, &token);
        resp.assert_invalid_token("bound to another client certificate");
    }
}

/// No token: 401 with a bare challenge, no error code (RFC 6750 section 3.1).
#[test]
fn request_without_a_token_gets_a_bare_challenge() {
    let o = start("");
    for http in VERSIONS {
        let resp = request(&o.gw, Some("payments"), "/api/accounts", http, &[]);
        assert_eq!(resp.status, 401, "{resp:?}");
        assert_eq!(resp.challenge(), "Bearer realm=\"api\"");
    }
}

/// A token past its exp plus the route's leeway is `invalid_token` ... expired.
#[test]
fn expired_token_is_invalid_token() {
    let o = start("");
    let resp = token_request(
        &o.gw,
        Some("shortlived"),
        "--http2",
        "grant_type=client_credentials&client_id=shortlived",
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    let token = resp.json()["access_token"].as_str().unwrap().to_string();
    let (_, claims) = decode(&token);
    let exp = claims["exp"].as_u64().unwrap();
    assert_eq!(exp - claims["iat"].as_u64().unwrap(), 2);
    let resp = call(&o.gw, Some("shortlived"), "/short", "--http1.1", &token);
    assert_eq!(resp.status, 200, "valid before it expires: {resp:?}");
    // exp and the 1 s leeway are whole seconds: wait until the second after both.
    let until = std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp + 2);
    if let Ok(left) = until.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(left + std::time::Duration::from_millis(100));
    }
    for http in VERSIONS {
        let resp = call(&o.gw, Some("shortlived"), "/short", http, &token);
        resp.assert_invalid_token("expired");
    }
}

/// A good token without the route's scope is 403 `insufficient_scope` naming the scope.
#[test]
fn token_without_the_route_scope_is_403_insufficient_scope() {
    let o = start("");
    let token = issue(&o.gw, "payments");
    for http in VERSIONS {
        let resp = call(&o.gw, Some("payments"), "/write", http, &token);
        assert_eq!(resp.status, 403, "{resp:?}");
        let c = resp.challenge();
        assert!(c.contains("error=\"insufficient_scope\""), "{c}");
        assert!(c.ends_with("scope=\"accounts:write\""), "{c}");
    }
}

/// Two Authorization headers are ambiguous: 400 `invalid_request`.
#[test]
fn two_authorization_headers_are_400_invalid_request() {
    let o = start("");
    let token = issue(&o.gw, "payments");
    let auth = format!("Authorization: Bearer {token}");
    for http in VERSIONS {
        let args = ["-H", &auth, "-H", "Authorization: Bearer another"];
        let resp = request(&o.gw, Some("payments"), "/api/accounts", http, &args);
        assert_eq!(resp.status, 400, "{resp:?}");
        let c = resp.challenge();
        assert!(c.contains("error=\"invalid_request\""), "{c}");
        assert!(c.contains("more than one Authorization header"), "{c}");
    }
}

/// A token in the query (RFC 6750 section 2.3) is refused: 400 `invalid_request`, even with
/// a good token in the header.
#[test]
fn token_in_the_query_is_400_invalid_request() {
    let o = start("");
    let token = issue(&o.gw, "payments");
    for http in VERSIONS {
        let path = format!("/api/accounts?access_token={token}");
        let resp = request(&o.gw, Some("payments"), &path, http, &[]);
        assert_eq!(resp.status, 400, "{resp:?}");
        assert!(resp.challenge().contains("not in the query"), "{}", resp.challenge());
        let resp = call(&o.gw, Some("payments"), &path, http, &token);
        assert_eq!(resp.status, 400, "{resp:?}");
    }
}

/// A foreign issuer's token minted by PyJWT and bound to the client's certificate passes a
/// route with that issuer's JWKS file.
#[test]
fn foreign_token_bound_to_the_client_certificate_passes() {
    let o = start("");
    let token = mint(&o.gw, &["--cert", "payments.crt"]);
    for http in VERSIONS {
        for path in ["/strict", "/loose"] {
            let resp = call(&o.gw, Some("payments"), path, http, &token);
            assert_eq!(resp.status, 200, "{path}: {resp:?}");
            assert_eq!(resp.json()["headers"]["x-token-sub"], "payments");
        }
        let resp = call(&o.gw, Some("other"), "/loose", http, &token);
        resp.assert_invalid_token("bound to another client certificate");
    }
}

/// Without cnf, a token is refused where the route requires a binding and passes where it
/// does not.
#[test]
fn unbound_token_passes_only_where_no_binding_is_required() {
    let o = start("");
    let token = mint(&o.gw, &[]);
    for http in VERSIONS {
        let resp = call(&o.gw, Some("payments"), "/strict", http, &token);
        resp.assert_invalid_token("only certificate-bound access tokens");
        let resp = call(&o.gw, Some("payments"), "/loose", http, &token);
        assert_eq!(resp.status, 200, "{resp:?}");
    }
}

/// RFC 9068 section 4: a JWT of type `JWT` is not an access token.
#[test]
fn token_with_typ_jwt_is_invalid_token() {
    let o = start("");
    let token = mint(&o.gw, &["--cert", "payments.crt", "--typ", "JWT"]);
    for http in VERSIONS {
        let resp = call(&o.gw, Some("payments"), "/loose", http, &token);
        resp.assert_invalid_token("not an access token (at+jwt)");
    }
}

/// Algorithm confusion: an HS256 token whose HMAC secret is the issuer's public JWKS is
/// refused before any key is used.
#[test]
fn hs256_token_keyed_with_the_public_jwk_is_invalid_token() {
    let o = start("");
    let token = mint(&o.gw, &["--cert", "payments.crt", "--hs256-secret", "test.jwks"]);
    assert_eq!(decode(&token).0["alg"], "HS256");
    for http in VERSIONS {
        let resp = call(&o.gw, Some("payments"), "/loose", http, &token);
        resp.assert_invalid_token("algorithm HS256 is not accepted");
    }
}

/// A token for another audience, or from another issuer (signed with the right key), is
/// `invalid_token`.
#[test]
fn token_for_another_audience_or_issuer_is_invalid_token() {
    let o = start("");
    // A later --aud or --iss replaces the default one.
    let cert = "payments.crt";
    let other_aud = mint(&o.gw, &["--cert", cert, "--aud", "https://elsewhere.example"]);
    let other_iss = mint(&o.gw, &["--cert", cert, "--iss", ISSUER]);
    for http in VERSIONS {
        let resp = call(&o.gw, Some("payments"), "/loose", http, &other_aud);
        resp.assert_invalid_token("another audience");
        let resp = call(&o.gw, Some("payments"), "/loose", http, &other_iss);
        resp.assert_invalid_token("another issuer");
    }
}

// ---------------------------------------------------------------------------------------
// 4. The introspection endpoint.

/// A client allowed to introspect gets the claims of a valid token, with cnf (RFC 7662).
#[test]
fn introspection_answers_active_claims_with_cnf() {
    let o = start("");
    let token = issue(&o.gw, "payments");
    let x5t = openssl_x5t(&o.gw.dir, "payments");
    for http in VERSIONS {
        let form = format!("token={token}&client_id=introspector");
        let resp = post(&o.gw, Some("introspector"), "/oauth/introspect", http, &form);
        assert_eq!(resp.status, 200, "{resp:?}");
        resp.assert_no_store();
        let v = resp.json();
        assert_eq!(v["active"], true);
        assert_eq!(v["client_id"], "payments");
        assert_eq!(v["sub"], "payments");
        assert_eq!(v["iss"], ISSUER);
        assert_eq!(v["scope"], "accounts:read");
        assert_eq!(v["cnf"]["x5t#S256"], x5t.as_str());
    }
}

/// A client without `introspect = true` may not introspect: `invalid_client`.
#[test]
fn introspection_refuses_a_client_not_allowed_to_introspect() {
    let o = start("");
    let token = issue(&o.gw, "payments");
    for http in VERSIONS {
        let form = format!("token={token}&client_id=payments");
        let resp = post(&o.gw, Some("payments"), "/oauth/introspect", http, &form);
        resp.assert_oauth_error(401, "invalid_client", "may not introspect");
    }
}

/// An unknown token is `{"active":false}` and nothing else (RFC 7662 section 2.2).
#[test]
fn introspection_of_an_unknown_token_is_exactly_active_false() {
    let o = start("");
    let forged = mint(&o.gw, &["--cert", "payments.crt"]);
    for http in VERSIONS {
        for token in ["no-such-token", forged.as_str()] {
            let form = format!("token={token}&client_id=introspector");
            let resp = post(&o.gw, Some("introspector"), "/oauth/introspect", http, &form);
            assert_eq!(resp.status, 200, "{resp:?}");
            assert_eq!(resp.body, r#"{"active":false}"#);
        }
    }
}

/// With `Accept: application/jwt` the answer is the token as a JWT, or 204 for an unknown
/// token.
#[test]
fn introspection_with_accept_jwt_answers_the_jwt_or_204() {
    let o = start("");
    let token = issue(&o.gw, "payments");
    for http in VERSIONS {
        let form = format!("token={token}&client_id=introspector");
        let args = ["-H", "Accept: application/jwt", "--data", &form];
        let resp = request(&o.gw, Some("introspector"), "/oauth/introspect", http, &args);
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.header("content-type"), Some("application/jwt"));
        assert_eq!(resp.body, token);
        let args =
            ["-H", "Accept: application/jwt", "--data", "token=nothing&client_id=introspector"];
        let resp = request(&o.gw, Some("introspector"), "/oauth/introspect", http, &args);
        assert_eq!(resp.status, 204, "{resp:?}");
        assert_eq!(resp.body, "");
    }
}

// ---------------------------------------------------------------------------------------
// 5. Phantom tokens with a remote authorization server.

/// A gateway whose `/phantom` route swaps opaque tokens through `fake_as.py`, with what the
/// test needs kept alive.
struct Phantom {
    gw: Gateway,
    /// The stand-in server's request log (JSON lines).
    log: std::path::PathBuf,
    _server: Option<Proc>,
    _dead: Option<socket2::Socket>,
    _tmp: TempDir,
}

/// [`Phantom`] with `fake_as.py --mode MODE`, or a dead port when `mode` is `None`.
fn phantom(mode: Option<&str>) -> Phantom {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    prepare(dir);
    let log = dir.join("as-requests.log");
    let (server, port, dead) = match mode {
        Some(mode) => {
            let d = |f: &str| dir.join(f).display().to_string();
            let (proc, port) = python_server(
                FAKE_AS,
                &[
                    "--cert",
                    &d("server.crt"),
                    "--key",
                    &d("server.key"),
                    "--mode",
                    mode,
                    "--log",
                    &d("as-requests.log"),
                    "--signing-key",
                    &d("test-signer.key"),
                    "--kid",
                    TEST_KID,
                    "--iss",
                    TEST_ISSUER,
                    "--aud",
                    AUDIENCE,
                    "--client-cert",
                    &d("payments.crt"),
                ],
            );
            (Some(proc), port, None)
        }
        None => {
            let (socket, port) = dead_port();
            (None, port, Some(socket))
        }
    };
    let extra = format!(
        r#"
[[upstream]]
name = "remote-as"
url = "https://127.0.0.1:{port}"
ca = ["root.crt"]
connect_timeout = "2s"
response_timeout = "5s"

[[route]]
path = "/phantom"
upstream = "@echo"
[route.token]
issuer = "{TEST_ISSUER}"
audience = ["{AUDIENCE}"]
jwks = "test.jwks"
require_binding = true
[route.token.introspection]
upstream = "remote-as"
path = "/introspect"
client_id = "gateway"
"#
    );
    let gw = Gateway::start(dir, &config("\"root.crt\"", &extra));
    Phantom { gw, log, _server: server, _dead: dead, _tmp: tmp }
}

const OPAQUE: &str = "opaque-3f9a2c71e4b8";

/// An opaque token is introspected (RFC 7662 form, Accept: application/jwt) and the upstream
/// sees the authorization server's JWT in its place, never the opaque token.
#[test]
fn phantom_token_is_swapped_for_the_authorization_server_jwt() {
    let o = phantom(Some("jwt"));
    let mut seen = Vec::new();
    for http in VERSIONS {
        let resp = call(&o.gw, Some("payments"), "/phantom/accounts", http, OPAQUE);
        assert_eq!(resp.status, 200, "{resp:?}");
        assert!(
            !resp.body.contains(OPAQUE),
            "the opaque token reached the upstream: {}",
            resp.body
        );
        let headers = &resp.json()["headers"];
        let auth = headers["authorization"].as_str().unwrap();
        let jwt = auth.strip_prefix("Bearer ").unwrap();
        let (header, claims) = decode(jwt);
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(claims["iss"], TEST_ISSUER);
        assert_eq!(claims["cnf"]["x5t#S256"], openssl_x5t(&o.gw.dir, "payments").as_str());
        assert_eq!(headers["x-token-sub"], "payments");
        seen.push(jwt.to_string());
    }
    let requests = std::fs::read_to_string(&o.log).unwrap();
    let first: Value = serde_json::from_str(requests.lines().next().unwrap()).unwrap();
    // Introspected once, then cached: both requests carried the JWT the server answered.
    assert_eq!(requests.lines().count(), 1, "{requests}");
    assert_eq!(seen, [first["answer"].as_str().unwrap(); 2]);
    assert_eq!(first["path"], "/introspect");
    assert_eq!(first["headers"]["accept"], "application/jwt");
    assert_eq!(first["form"]["token"], serde_json::json!([OPAQUE]));
    assert_eq!(first["form"]["token_type_hint"], serde_json::json!(["access_token"]));
    assert_eq!(first["form"]["client_id"], serde_json::json!(["gateway"]));
    // The swapped JWT is still bound: another certificate is refused.
    let resp = call(&o.gw, Some("other"), "/phantom/accounts", "--http2", OPAQUE);
    resp.assert_invalid_token("bound to another client certificate");
}

/// 204 from the authorization server (inactive) is `invalid_token`.
#[test]
fn phantom_inactive_answer_is_401() {
    let o = phantom(Some("204"));
    for http in VERSIONS {
        let resp = call(&o.gw, Some("payments"), "/phantom/accounts", http, OPAQUE);
        resp.assert_invalid_token("not active");
    }
}

/// An error status from the authorization server is 502 naming it.
#[test]
fn phantom_server_error_is_502() {
    let o = phantom(Some("500"));
    for http in VERSIONS {
        let resp = call(&o.gw, Some("payments"), "/phantom/accounts", http, OPAQUE);
        assert_eq!(resp.status, 502, "{resp:?}");
        assert!(resp.body.contains("remote-as"), "{}", resp.body);
    }
}

/// 503 from the authorization server is 503 naming it.
#[test]
fn phantom_server_unavailable_is_503() {
    let o = phantom(Some("503"));
    for http in VERSIONS {
        let resp = call(&o.gw, Some("payments"), "/phantom/accounts", http, OPAQUE);
        assert_eq!(resp.status, 503, "{resp:?}");
        assert!(resp.body.contains("remote-as"), "{}", resp.body);
    }
}

/// An authorization server that cannot be reached is 503 naming it.
#[test]
fn phantom_unreachable_server_is_503_naming_it() {
    let o = phantom(None);
    for http in VERSIONS {
        let resp = call(&o.gw, Some("payments"), "/phantom/accounts", http, OPAQUE);
        assert_eq!(resp.status, 503, "{resp:?}");
        assert!(resp.body.contains("remote-as"), "{}", resp.body);
    }
}

// ---------------------------------------------------------------------------------------
// 6. Configuration errors.

/// `serve --check` on [`config`] with `extra`, after `edit`: the exit code and output.
fn check(extra: &str, edit: impl Fn(String) -> String) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    prepare(tmp.path());
    let (code, out) = serve_check(tmp.path(), &edit(config("\"root.crt\"", extra)));
    (code, out)
}

/// The configuration as written passes `serve --check` (so each refusal below is its edit's).
#[test]
fn oauth_configuration_passes_the_check() {
    let (code, out) = check("", |c| c);
    assert_eq!(code, 0, "{out}");
}

/// A tls_client_auth client names exactly one subject value: none is refused, naming the
/// client.
#[test]
fn tls_client_auth_client_without_a_subject_value_is_refused() {
    let (code, out) = check("", |c| {
        c.replacen("tls_client_auth_san_uri = \"spiffe://example.org/payments\"\n", "", 1)
    });
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("oauth.client[0]"), "{out}");
    assert!(out.contains("it has none"), "{out}");
}

/// Two subject values are refused too, naming both fields.
#[test]
fn tls_client_auth_client_with_two_subject_values_is_refused() {
    let (code, out) = check("", |c| {
        c.replacen(
            "tls_client_auth_san_uri = \"spiffe://example.org/payments\"\n",
            "tls_client_auth_san_uri = \"spiffe://example.org/payments\"\n\
             tls_client_auth_san_dns = \"payments.example.org\"\n",
            1,
        )
    });
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("oauth.client[0]"), "{out}");
    assert!(out.contains("tls_client_auth_san_dns"), "{out}");
    assert!(out.contains("tls_client_auth_san_uri"), "{out}");
}

/// The token service's route must let clients without a certificate in (client_cert =
/// "optional"): it answers invalid_client itself.
#[test]
fn oauth_route_without_optional_client_cert_is_refused() {
    let (code, out) = check("", |c| {
        c.replacen("upstream = \"@oauth\"\nclient_cert = \"optional\"", "upstream = \"@oauth\"", 1)
    });
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("route[0].client_cert"), "{out}");
    assert!(out.contains("set client_cert = \"optional\" on its route"), "{out}");
}

/// A route checking a foreign issuer's tokens needs its keys: without jwks (or jwks_url) the
/// check names the route's token table.
#[test]
fn token_check_for_a_foreign_issuer_without_keys_is_refused() {
    let extra = format!(
        "\n[[route]]\npath = \"/nokeys\"\nupstream = \"@echo\"\n[route.token]\n\
         issuer = \"{TEST_ISSUER}\"\naudience = [\"{AUDIENCE}\"]\n"
    );
    let (code, out) = check(&extra, |c| c);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("route[7].token"), "{out}");
    assert!(out.contains("set jwks"), "{out}");
}

/// A broken `[oauth]` is reported once, by its own field: the routes that use the service
/// (as target, for its keys, for introspection) fail with it without claiming it is missing.
#[test]
fn broken_oauth_section_is_reported_once() {
    let extra = format!(
        "\n[[route]]\npath = \"/local-phantom\"\nupstream = \"@echo\"\n[route.token]\n\
         issuer = \"{ISSUER}\"\naudience = [\"{AUDIENCE}\"]\n\
         [route.token.introspection]\nupstream = \"@oauth\"\n"
    );
    let (code, out) = check(&extra, |c| c);
    assert_eq!(code, 0, "{out}");
    let (code, out) =
        check(&extra, |c| c.replacen("key = \"signing.key\"", "key = \"gone.key\"", 1));
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("1 problem in the configuration"), "{out}");
    assert!(out.contains("oauth.signing_key[0].key: cannot read"), "{out}");
}
