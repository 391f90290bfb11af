//! Replays the checked-in fuzz corpora and regressions (`fuzz/corpus/<target>`,
//! `fuzz/regressions/<target>`) through the very functions the libFuzzer targets call, on
//! stable, so CI catches a regression without nightly or a fuzz run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the test failing.

use std::path::Path;

use certgate_gateway::fuzz;

/// Replays `target`'s corpus and regressions through `run` (see
/// `certgate_pki::fuzz::replay`).
fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    certgate_pki::fuzz::replay(&root, target, run);
}

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

/// Values never add markup to an HTML page or break a JSON one.
#[test]
fn error_page_corpus_escapes_every_value() {
    replay("error_page", fuzz::error_page);
}

/// The passthrough ClientHello reader decides the same however the bytes arrive (it shares
/// the client_hello corpus: `cargo fuzz run passthrough_hello fuzz/corpus/client_hello`).
#[test]
fn passthrough_hello_corpus_is_chunking_independent() {
    replay("client_hello", fuzz::passthrough_hello);
}

/// The PROXY header reader reads exactly the header, however the bytes arrive.
#[test]
fn proxy_header_corpus_reads_exactly_the_header() {
    replay("proxy_header", fuzz::proxy_header);
}

#[test]
fn oauth_corpus_passes_only_the_signed_token() {
    replay("oauth", fuzz::oauth);
    // The oracle can pass: the signed token does, and one changed character does not.
    let signed = fuzz::oauth_signed_input();
    assert!(fuzz::oauth_passes(&signed));
    let mut changed = signed.clone();
    let last_signature_char = signed.iter().position(|&b| b == 0).unwrap() - 1;
    changed[last_signature_char] = if signed[last_signature_char] == b'A' { b'B' } else { b'A' };
    assert!(!fuzz::oauth_passes(&changed));
    assert!(!fuzz::oauth_passes(&signed[..last_signature_char]));
}
