//! certgate-gateway: the mTLS gateway. It terminates TLS, verifies client certificates with
//! certgate's path validation, routes by host and path, authorizes by identity, forwards the
//! identity in the header formats upstreams already parse, and speaks (m)TLS to upstreams.
//!
//! - [`config`]: the TOML file, built once into types that cannot hold an invalid state;
//! - [`tls`]: listeners' TLS (SNI certificates, client-certificate policy);
//! - [`http`]: the request pipeline and its phases;
//! - [`server`]: accept → handshake → identity → serve, timeouts, shutdown;
//! - [`limits`]: the process's open-files limit;
//! - [`access_log`]: JSON lines written off the runtime threads;
//! - [`admin`]: health, readiness, status, reload and metrics on the admin listener;
//! - [`watch`]: reload when a file the configuration names changes;
//! - [`echo`]: the built-in echo upstream of `certgate quickstart`;
//! - [`oauth`]: the built-in token service and the routes' access-token checks;
//! - [`ca`]: the online CA (`certgate ca serve`), its thread and its endpoints;
//! - [`managed`]: listener and upstream certificates the gateway requests and renews itself;
//! - [`renewal`]: the online CA's client: first certificates, renewal and its schedule;
//! - `fuzz` (cargo feature `fuzz`): the bodies of the fuzz targets in `fuzz/`.

pub mod access_log;
pub mod admin;
pub mod ca;
pub mod config;
pub mod echo;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod http;
pub mod limits;
pub mod managed;
pub mod metrics;
pub mod oauth;
pub mod proxy_protocol;
pub mod renewal;
pub mod server;
pub mod tls;
pub mod watch;

pub use server::{Ready, Reloader, serve};
