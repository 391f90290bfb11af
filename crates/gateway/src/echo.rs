//! The built-in echo service: answers every request with the request line, the headers and
//! the body size it received, as JSON, so users see exactly what the gateway forwards.
//!
//! A route reaches it in-process with `upstream = "@echo"`: it then receives exactly what an
//! upstream would. `certgate quickstart` puts it behind its routes.

use std::collections::BTreeMap;

use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;

use crate::http::body::BodyError;
use crate::http::pipeline::text;
use crate::http::reject::Reject;
use crate::http::upstream::Body;

/// The echo of one request. Reading the body can fail with the gateway's body bounds.
pub async fn answer(req: Request<Body>) -> Result<Response<Body>, Reject> {
    let (parts, mut body) = req.into_parts();
    // Counted as it streams, never held: a body of any size costs one frame of memory.
    let mut body_bytes: u64 = 0;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_bytes += data.len() as u64;
                }
            }
            Err(e) => {
                return Err(match e.downcast_ref::<BodyError>() {
                    Some(BodyError::Stalled { after }) => Reject::BodyTimeout { after: *after },
                    Some(BodyError::TooLarge { limit }) => Reject::BodyTooLarge { limit: *limit },
                    None => Reject::UpstreamUnreachable { upstream: "@echo".into() },
                });
            }
        }
    }
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let body = serde_json::json!({
        "request_line": format!("{} {} {:?}", parts.method, target, parts.version),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut resp = text(StatusCode::OK, format!("{body:#}\n"));
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}
