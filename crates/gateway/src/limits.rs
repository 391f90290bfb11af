//! Process limits the gateway needs: enough file descriptors for its connections.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept free beyond client connections: upstream connections, listeners, files.
const HEADROOM: u64 = 256;

/// Raises the open-files soft limit to the hard limit, and warns (naming the numbers) when
/// `connections` client connections plus as many upstream connections cannot fit under it.
pub fn raise_open_files(connections: usize) {
    let current = getrlimit(Resource::Nofile);
    let soft = match (current.current, current.maximum) {
        (Some(soft), Some(hard)) if soft < hard => {
            match setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) }) {
                Ok(()) => hard,
                Err(error) => {
                    tracing::warn!(%error, soft, hard, "cannot raise the open-files limit");
                    soft
                }
            }
        }
        (Some(soft), _) => soft,
        (None, _) => return, // unlimited
    };
    // Each proxied connection may hold an upstream connection too.
    let needed = (connections as u64).saturating_mul(2).saturating_add(HEADROOM);
    if needed > soft {
        tracing::warn!(
            "the open-files limit is {soft}, but max_connections ({connections} in all listeners) \
             can need about {needed} descriptors (one per client and one per upstream connection, \
             plus {HEADROOM}); raise the limit (LimitNOFILE= in systemd, ulimit -n) or lower \
             max_connections"
        );
    }
}
