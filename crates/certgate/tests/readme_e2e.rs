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
