//! Replays the checked-in fuzz corpora and regressions (`fuzz/corpus/<target>`,
//! `fuzz/regressions/<target>`) through the very functions the libFuzzer targets call, on
//! stable, so CI catches a regression without nightly or a fuzz run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the test failing.

use std::path::Path;

use certgate_pki::fuzz;

/// Replays `target`'s corpus and regressions through `run` (see
/// `certgate_pki::fuzz::replay`).
fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    certgate_pki::fuzz::replay(&root, target, run);
}

#[test]
fn csr_corpus_holds_the_signing_policy() {
    replay("csr", fuzz::csr);
}

/// Certificate loading and inspection never panic.
#[test]
fn cert_load_corpus_never_panics() {
    replay("cert_load", fuzz::cert_load);
}

/// CRL loading and verification against a CRL never panic.
#[test]
fn crl_load_corpus_never_panics() {
    replay("crl_load", fuzz::crl_load);
}

/// A `--subject` that parses is encoded as written and its comma form reads back.
#[test]
fn subject_corpus_encodes_as_written() {
    replay("subject", fuzz::subject);
}
