//! Helpers for the CA end-to-end tests: a scratch directory holding a CA, the real `certgate`
//! binary run in it, and the openssl checks users compare it with.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const CERTGATE: &str = env!("CARGO_BIN_EXE_certgate");

/// A scratch directory with a CA in `ca/` (created by [`Scratch::with_ca`]).
pub struct Scratch {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        Scratch { _tmp: tmp, dir }
    }

    pub fn with_ca(args: &[&str]) -> Scratch {
        let s = Scratch::new();
        let mut all = vec!["ca", "init"];
        all.extend_from_slice(args);
        s.ok(&all);
        s
    }

    /// Runs certgate with `--ca-dir ca` in the scratch directory.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(CERTGATE)
            .current_dir(&self.dir)
            .env("CERTGATE_CA_DIR", "ca")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "certgate {args:?} failed: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs certgate expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "certgate {args:?} should fail: {}", text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn openssl(&self, args: &[&str]) -> Output {
        Command::new("openssl").current_dir(&self.dir).args(args).output().unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

pub fn no_temp_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "temporary file left behind: {name}");
    }
}

/// `openssl verify` with the chain file's intermediate as untrusted.
pub fn openssl_verify(s: &Scratch, cert: &str, purpose: &str) -> Output {
    s.openssl(&["verify", "-CAfile", "ca/root.crt", "-untrusted", cert, "-purpose", purpose, cert])
}

/// The example lines of `certgate ARGS --help` (after "Examples:"), each split into
/// arguments as a shell would (single and double quotes, `\` line continuations, `#`
/// comments).
pub fn help_examples(s: &Scratch, args: &[&str]) -> Vec<Vec<String>> {
    let mut all = args.to_vec();
    all.push("--help");
    let help = s.ok(&all);
    let examples =
        help.split("Examples:\n").nth(1).unwrap_or_else(|| panic!("no Examples: in {help}"));
    let joined = examples.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|line| line.trim().strip_prefix("certgate "))
        .map(|line| {
            let line = line.split(" #").next().unwrap();
            let (mut words, mut word, mut quote) = (Vec::new(), String::new(), None);
            for c in line.chars() {
                match (c, quote) {
                    ('"' | '\'', None) => quote = Some(c),
                    (c, Some(q)) if c == q => quote = None,
                    (' ', None) => {
                        words.extend((!word.is_empty()).then(|| std::mem::take(&mut word)))
                    }
                    (c, _) => word.push(c),
                }
            }
            words.extend((!word.is_empty()).then_some(word));
            words
        })
        .collect()
}
