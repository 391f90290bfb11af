//! TLS: server configs per listener (certificates by SNI, client-certificate policy) and the
//! identity that a finished handshake establishes.

pub mod passthrough;
pub mod server;
