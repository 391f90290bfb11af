//! The deploy files in `deploy/` are checked as far as this machine allows.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const CERTGATE: &str = env!("CARGO_BIN_EXE_certgate");

/// The systemd unit passes `systemd-analyze verify` (with ExecStart pointing at this build and
/// an existing user, since the check resolves both).
#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/certgate.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"), "reload is SIGHUP");
    let local = unit
        .replace("/usr/local/bin/certgate", CERTGATE)
        .replace("User=certgate", "User=root")
        .replace("Group=certgate", "Group=root");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("certgate.service");
    std::fs::write(&path, local).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The configuration in the Kubernetes example passes `serve --check` once its Secret's files
/// exist (here written by the test PKI under the same names).
#[test]
fn kubernetes_example_config_checks() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes.yaml"
    ))
    .unwrap();
    let toml: String = example
        .lines()
        .skip_while(|l| !l.contains("certgate.toml: |"))
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(toml.contains("[[listener]]") && toml.contains("[admin]"), "{toml}");
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let pki = certgate_pki::testkit::TestPki::new();
    pki.server(&["certgate.example"]).write(&tls, "tls");
    std::fs::write(tls.join("ca.crt"), pki.root_pem()).unwrap();
    std::fs::write(tls.join("crl.pem"), pki.crl(&[])).unwrap();
    let config = toml
        .replace("/etc/certgate/tls/", &format!("{}/", tls.display()))
        .replace("0.0.0.0:8443", "127.0.0.1:0");
    let path = dir.path().join("certgate.toml");
    std::fs::write(&path, config).unwrap();
    let out =
        Command::new(CERTGATE).args(["serve", "--check", "--config"]).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
