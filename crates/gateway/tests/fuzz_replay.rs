//! Replays the checked-in fuzz corpora and regressions (`fuzz/corpus/<target>`,
//! `fuzz/regressions/<target>`) through the very functions the libFuzzer targets call, on
//! stable, so CI catches a regression without nightly or a fuzz run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the test failing.

use std::path::{Path, PathBuf};

use certgate_gateway::fuzz;

/// Every input of `target`; fails when its corpus is empty, so a wrong path cannot pass.
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = root.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            assert!(kind == "regressions", "no corpus directory {}", dir.display());
            continue;
        };
        let before = files.len();
        files.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
        assert!(kind == "regressions" || files.len() > before, "{} is empty", dir.display());
    }
    files.sort();
    files
}

/// Runs every input of `target` through `run`, each on a thread with the 8 MiB stack of a
/// process's main thread (where libFuzzer runs them, and where certgate loads its config): a
/// test thread's 2 MiB is too little for the recursion in toml's deserializer on a deeply
/// nested input (see fuzz/README.md).
fn replay(target: &str, run: fn(&[u8])) {
    for file in inputs(target) {
        let data = std::fs::read(&file).unwrap();
        let outcome = std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || run(&data))
            .unwrap()
            .join();
        assert!(outcome.is_ok(), "fuzz/{target}: {} fails its oracle", file.display());
    }
}

/// Configurations are refused with file, field and reason, or build with bounded timeouts.
#[test]
fn config_corpus_names_every_error() {
    replay("config", fuzz::config);
}

/// Hostile certificate fields never break an identity header format.
#[test]
fn identity_headers_corpus_round_trips() {
    replay("identity_headers", fuzz::identity_headers);
}

/// Every path reading is routed where its normal form is.
#[test]
fn path_corpus_routes_consistently() {
    replay("path", fuzz::path);
}

/// A ClientHello gives the same verdict however it is split.
#[test]
fn client_hello_corpus_is_chunking_independent() {
    replay("client_hello", fuzz::client_hello);
}
