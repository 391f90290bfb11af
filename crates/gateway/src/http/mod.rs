//! The HTTP request path: routing, authorization, identity headers, upstreams, and the one
//! map from refusal to status and body. `pipeline::handle` calls the phases in order.

pub mod authz;
pub mod body;
pub mod error_page;
pub mod forward;
pub mod headers;
pub mod path;
pub mod pipeline;
pub mod reject;
pub mod route;
pub mod upgrade;
pub mod upstream;
