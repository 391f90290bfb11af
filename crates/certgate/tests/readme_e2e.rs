//! The README's CA walk-through runs top to bottom as printed, in a fresh directory, with
//! the built `certgate` first on PATH: every command succeeds except the one the README
//! marks as refused, which fails saying why.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

/// The commands of the first `sh` block after `heading`, continuation lines joined.
fn commands(readme: &str, heading: &str) -> Vec<String> {
    let section = &readme[readme.find(heading).expect("the heading")..];
    let block = section.split("```sh\n").nth(1).expect("an sh block");
    let block = block.split("\n```").next().unwrap();
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in block.lines() {
        let line = line.trim_end();
        if pending.is_empty() && (line.trim_start().starts_with('#') || line.trim().is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                out.push(std::mem::take(&mut pending));
            }
        }
    }
    out
}

#[test]
fn readme_ca_walkthrough_runs_as_printed() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let steps = commands(&readme, "## Five minutes with the CA");
    assert!(steps.len() >= 15, "{steps:#?}");
    let tmp = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_certgate")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    for step in &steps {
        let out = Command::new("bash")
            .args(["-c", step])
            .current_dir(tmp.path())
            .env("PATH", &path)
            .env_remove("CERTGATE_CA_DIR")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if step.contains("# REFUSED") {
            assert_eq!(out.status.code(), Some(1), "{step}\n{text}");
            assert!(text.contains("revoked"), "{step}\n{text}");
        } else {
            assert!(out.status.success(), "{step}\n{text}");
        }
    }
    assert!(tmp.path().join("web/tls.crt").exists());
    assert!(tmp.path().join("joe.p12").exists());
}

/// The README's short-lived-certificates walk-through (seed 001: a proxy in front of an
/// upstream that requires mTLS) runs as one script, as printed, with its three loopback
/// ports swapped for free ones: the upstream reports the gateway's managed certificate.
#[test]
fn readme_short_lived_walkthrough_runs_as_printed() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let heading = "### Short-lived certificates, kept renewed";
    let section = &readme[readme.find(heading).expect("the heading")..];
    let block = section.split("```sh\n").nth(1).expect("an sh block");
    let mut script = block.split("\n```").next().unwrap().to_string();
    for port in ["9443", "8443", "8444"] {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        script = script.replace(port, &free.to_string());
    }
    // Background jobs would hold the output pipes open if the script stopped early: they are
    // stopped on any exit, and on the timeout's SIGTERM.
    let script = format!("trap 'kill $(jobs -p) 2>/dev/null' EXIT\ntrap 'exit 1' TERM\n{script}");
    let tmp = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_certgate")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("timeout")
        .args(["-k", "5", "90", "bash", "-e", "-c", &script])
        .current_dir(tmp.path())
        .env("PATH", &path)
        .env_remove("CERTGATE_CA_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("Subject: CN=gateway"), "{stdout}\n{stderr}");
    assert!(stdout.contains("Not After"), "{stdout}");
    assert!(stderr.contains("keeping api renewed"), "{stderr}");
    assert!(
        stderr.contains("managed certificate gateway (no certificate yet): received"),
        "{stderr}"
    );
    let key = tmp.path().join("state/gateway.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
}
