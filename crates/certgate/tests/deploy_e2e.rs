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
