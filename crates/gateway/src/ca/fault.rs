//! A test-only fault point inside issuance, to kill the process at a chosen moment and check
//! what the inventory holds afterwards (`tests/ca_serve_e2e.rs`).
//!
//! It exists only in debug builds (`cfg(debug_assertions)`), which is what `cargo test` and
//! `cargo nextest` run: a release build compiles [`pause`] to nothing and ignores the
//! variables. In a debug build, `CERTGATE_TEST_PAUSE=before-commit` (or `after-commit`) makes
//! the CA thread, at that point of a `POST /sign`, write the point's name to the file
//! `CERTGATE_TEST_PAUSE_MARKER` names and then sleep for [`PAUSE`], so the test can `kill -9`
//! the process there.

/// Where issuance may be paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Inside the inventory transaction: the row and the token's `jti` written, not committed.
    BeforeCommit,
    /// The transaction committed, the answer not sent yet.
    AfterCommit,
}

impl Point {
    /// The value of `CERTGATE_TEST_PAUSE` that selects it.
    pub fn as_str(self) -> &'static str {
        match self {
            Point::BeforeCommit => "before-commit",
            Point::AfterCommit => "after-commit",
        }
    }
}

/// How long a paused CA thread sleeps (then carries on): longer than any test waits.
#[cfg(debug_assertions)]
pub const PAUSE: std::time::Duration = std::time::Duration::from_secs(120);

/// Pauses the calling (CA) thread at `point` when `CERTGATE_TEST_PAUSE` names it; a debug
/// build only (see the module's documentation).
#[cfg(debug_assertions)]
pub fn pause(point: Point) {
    if std::env::var("CERTGATE_TEST_PAUSE").ok().as_deref() != Some(point.as_str()) {
        return;
    }
    if let Some(marker) = std::env::var_os("CERTGATE_TEST_PAUSE_MARKER") {
        // A test waits for this file; without it, it times out and says so.
        let _ = std::fs::write(marker, point.as_str());
    }
    tracing::warn!(point = point.as_str(), "CERTGATE_TEST_PAUSE: the CA thread pauses");
    std::thread::sleep(PAUSE);
}

/// Release builds have no fault point.
#[cfg(not(debug_assertions))]
pub fn pause(_point: Point) {}
