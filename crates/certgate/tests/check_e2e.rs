//! `certgate serve --check` catches what would fail at run time: certificate mistakes are
//! errors, problems of time fail the check but only warn at start, and warnings never fail.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gateway_support;

use certgate_pki::profile::Profile;
use certgate_pki::testkit::LeafSpec;
use gateway_support::*;
use time::{Duration, OffsetDateTime};

fn check(dir: &std::path::Path, config: &str) -> (i32, String) {
    serve_check(dir, config)
}

fn base(mode: &str) -> String {
    format!("{}{}\n[[route]]\nupstream = \"app\"\n", listener(mode, ""), upstream_block("app", 1))
}

/// Certificate mistakes that make a configuration meaningless are errors naming file, field
/// and reason.
#[test]
fn certificate_mistakes_fail_the_check() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    pki.client("client-as-server", &[]).write(dir, "clientcert");
    pki.server(&["up.example"]).write(dir, "servercert");
    let joe = pki.client("joe", &[]);
    joe.write(dir, "joe");
    std::fs::write(dir.join("bundle.crt"), &joe.chain_pem).unwrap();
    let cases = [
        (
            base("required").replace("\"server.crt\", key = \"server.key\"", "\"clientcert.crt\", key = \"clientcert.key\""),
            "listener[0].certificates[0].cert: CN=client-as-server is not a TLS server certificate: its extended key usage is clientAuth, without serverAuth",
        ),
        (
            base("required").replace("trust = [\"root.crt\"]", "trust = [\"bundle.crt\"]"),
            "listener[0].client_auth.trust[0]: bundle.crt: CN=joe is not a CA certificate",
        ),
        (
            base("off"),
            "route[0].client_cert: the route needs a client certificate, but listener listener-0 never asks for one",
        ),
        (
            base("required").replace("url = \"http://127.0.0.1:1\"", "url = \"https://127.0.0.1:1\"\nca = [\"root.crt\"]\nclient_cert = \"servercert.crt\"\nclient_key = \"servercert.key\""),
            "upstream[0].client_cert: CN=up.example is not a TLS client certificate",
        ),
    ];
    for (config, expected) in cases {
        let (code, text) = check(dir, &config);
        assert_eq!(code, 1, "{expected}: {text}");
        assert!(text.contains(expected), "missing {expected:?} in: {text}");
    }
}

/// Problems of time fail `--check` but only warn when serving; warnings never fail.
#[test]
fn problems_of_time_fail_the_check_and_warn_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    let t0 = OffsetDateTime::now_utc() - Duration::days(10);
    let expired = pki.leaf(LeafSpec {
        cn: "old".into(),
        sans: vec!["localhost".into()],
        profile: Profile::Server,
        not_before: Some(t0),
        not_after: Some(t0 + Duration::days(1)),
        ..LeafSpec::client()
    });
    expired.write(dir, "expired");
    let ageing = pki.leaf(LeafSpec {
        cn: "ageing".into(),
        sans: vec!["localhost".into()],
        profile: Profile::Server,
        not_before: Some(OffsetDateTime::now_utc() - Duration::days(80)),
        not_after: Some(OffsetDateTime::now_utc() + Duration::days(10)),
        ..LeafSpec::client()
    });
    ageing.write(dir, "ageing");
    // A leaf-only file: clients without the intermediate cannot complete the chain.
    let pem = std::fs::read_to_string(dir.join("server.crt")).unwrap();
    let leaf_only = pem.split_inclusive("-----END CERTIFICATE-----\n").next().unwrap();
    std::fs::write(dir.join("leafonly.crt"), leaf_only).unwrap();
    std::fs::copy(dir.join("server.key"), dir.join("leafonly.key")).unwrap();
    std::fs::write(
        dir.join("stale.pem"),
        pki.crl_until(&[], OffsetDateTime::now_utc() - Duration::hours(2)),
    )
    .unwrap();
    std::fs::write(
        dir.join("soon.pem"),
        pki.crl_until(&[], OffsetDateTime::now_utc() + Duration::hours(2)),
    )
    .unwrap();

    let swap = |name: &str| {
        base("optional").replace(
            "\"server.crt\", key = \"server.key\"",
            &format!("\"{name}.crt\", key = \"{name}.key\""),
        )
    };
    let crl = |file: &str| {
        base("optional").replace(
            "trust = [\"root.crt\"]",
            &format!("trust = [\"root.crt\"]\ncrls = [\"{file}\"]"),
        )
    };
    for (config, expected) in [
        (swap("expired"), "listener[0].certificates[0].cert: CN=old expired on"),
        (swap("leafonly"), "the file holds only the leaf"),
        (
            crl("stale.pem"),
            "listener[0].client_auth.crls[0]: stale.pem: the CRL is past its next update",
        ),
    ] {
        let (code, text) = check(dir, &config);
        assert_eq!(code, 1, "{expected}: {text}");
        assert!(text.contains(expected), "missing {expected:?} in: {text}");
        // Serving starts anyway, with the problem as a warning.
        let gw = Gateway::start(dir, &config);
        assert!(gw.stderr().contains("serving anyway"), "{}", gw.stderr());
    }
    for (config, expected) in [
        (
            swap("ageing"),
            "listener[0].certificates[0].cert: CN=ageing is past two thirds of its lifetime",
        ),
        (crl("soon.pem"), "the CRL's next update is due in"),
    ] {
        let (code, text) = check(dir, &config);
        assert_eq!(code, 0, "{expected}: {text}");
        assert!(
            text.contains(expected) && text.contains("ok: "),
            "missing {expected:?} in: {text}"
        );
    }
}
