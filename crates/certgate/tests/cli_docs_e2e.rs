//! End-to-end tests of the shell completions (`certgate completions`) and man pages
//! (`certgate man`): the real binary's output, checked by bash, man and groff.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_support;

use std::process::{Command, Stdio};

use pki_support::*;

/// Runs `program args` with `input` on stdin; returns (success, stdout, stderr).
fn pipe(program: &str, args: &[&str], input: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What bash's completion offers for the words of a command line (the last one being
/// completed), with certgate's completion script loaded.
fn bash_complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let line = words.join(" ");
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let program = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={cword}; COMP_LINE='{line}'; \
         COMP_POINT=${{#COMP_LINE}}; _certgate certgate '{}' '{prev}'; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words[cword]
    );
    let out = Command::new("bash").args(["-c", &program]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// The bash completion script is valid bash, and completing with it offers certgate's
/// commands, subcommands and the values of --key-type.
#[test]
fn bash_completion_completes_commands_and_values() {
    let s = Scratch::new();
    let script = s.ok(&["completions", "bash"]);
    for name in ["verify", "quickstart", "completions", "revoke", "--key-type", "--profile"] {
        assert!(script.contains(name), "{name} is not in the script");
    }
    std::fs::write(s.path("certgate.bash"), &script).unwrap();
    let syntax = Command::new("bash").args(["-n"]).arg(s.path("certgate.bash")).output().unwrap();
    assert!(syntax.status.success(), "bash -n: {}", text(&syntax));
    let script = s.path("certgate.bash");
    let top = bash_complete(&script, &["certgate", ""]);
    for command in ["ca", "cert", "crl", "verify", "inspect", "serve", "quickstart", "man"] {
        assert!(top.iter().any(|w| w == command), "{command} not offered: {top:?}");
    }
    assert_eq!(bash_complete(&script, &["certgate", "cert", "is"]), ["issue"]);
    assert_eq!(
        bash_complete(&script, &["certgate", "cert", "issue", "x", "--key-type", ""]),
        ["ec-p256", "ec-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096"]
    );
}

/// The zsh and fish scripts name certgate and its commands, and are valid for the shell where
/// it is installed.
#[test]
fn zsh_and_fish_completions_are_scripts_for_their_shell() {
    let s = Scratch::new();
    let zsh = s.ok(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef certgate"), "{zsh}");
    let fish = s.ok(&["completions", "fish"]);
    assert!(fish.contains("complete -c certgate"), "{fish}");
    for script in [&zsh, &fish] {
        for command in ["quickstart", "verify", "issue", "key-type"] {
            assert!(script.contains(command), "{command}");
        }
    }
    for (shell, script) in [("zsh", &zsh), ("fish", &fish)] {
        if installed(shell) {
            let (ok, _, err) = pipe(shell, &["-n"], script);
            assert!(ok, "{shell} -n: {err}");
        }
    }
    let err = s.fails(&["completions", "tcsh"]);
    assert!(err.contains("[possible values: bash,"), "{err}");
}

/// `certgate man` prints a man page that man and groff render without warnings, listing the
/// commands; `certgate man cert issue` is that command's page with its flags; an unknown
/// command is refused, named as written.
#[test]
fn man_pages_render_and_list_the_commands() {
    let s = Scratch::new();
    let page = s.ok(&["man"]);
    assert!(page.contains(".TH certgate 1"), "{page}");
    for command in ["ca", "cert", "crl", "verify", "inspect", "serve", "quickstart", "completions"]
    {
        assert!(page.contains(&format!("certgate\\-{command}(1)")), "{command}: {page}");
    }
    let issue = s.ok(&["man", "cert", "issue"]);
    assert!(issue.contains(".TH certgate-cert-issue 1"), "{issue}");
    assert!(issue.contains("\\-\\-key\\-type") && issue.contains("ed25519"), "{issue}");
    assert!(issue.contains("Examples:"), "{issue}");
    for roff in [&page, &issue] {
        let (ok, _, warnings) = pipe("groff", &["-man", "-Tutf8", "-ww", "-z"], roff);
        assert!(ok && warnings.is_empty(), "groff: {warnings}");
    }
    let (ok, rendered, err) = pipe("man", &["-l", "-"], &issue);
    assert!(ok, "man -l -: {err}");
    assert!(
        rendered.contains("certgate-cert-issue") && rendered.contains("--key-type"),
        "{rendered}"
    );
    let err = s.fails(&["man", "cert", "bogus"]);
    assert!(
        err.contains(
            "no command `certgate cert bogus`; the commands of `certgate cert` are issue,"
        ),
        "{err}"
    );
}
