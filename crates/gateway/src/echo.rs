//! The built-in echo upstream of `certgate quickstart`: answers every request with the request
//! line and headers it received, as JSON, so users see exactly what the gateway forwarded.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::http::pipeline::text;

/// Binds the echo service on `addr` (port 0 picks one) and serves it in the background.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let mut headers: BTreeMap<String, String> = BTreeMap::new();
                        for (name, value) in req.headers() {
                            let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
                            headers
                                .entry(name.as_str().to_string())
                                .and_modify(|e| {
                                    e.push_str(", ");
                                    e.push_str(&v);
                                })
                                .or_insert(v);
                        }
                        let body = serde_json::json!({
                            "request_line": format!("{} {} {:?}", req.method(), req.uri(), req.version()),
                            "headers": headers,
                        });
                        let mut resp = text(StatusCode::OK, format!("{body:#}\n"));
                        resp.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(local)
}
