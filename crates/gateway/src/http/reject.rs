//! Every refusal the gateway answers itself, mapped to a status, a short body and a stable
//! code in one exhaustive match: a new kind of refusal does not compile until it has an
//! answer. Bodies never carry internal addresses or library errors (those go to the log);
//! certificate refusals keep their reason, since it describes the client's own certificate.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use certgate_pki::verify::VerifyError;
use certgate_token::error::BearerError;
use http::StatusCode;

use crate::http::path::PathError;

/// Why the gateway answers instead of the upstream.
#[derive(Debug)]
pub enum Reject {
    /// The request has no Host and no authority.
    MissingHost,
    /// The Host is not a host name or IP address (with an optional port).
    InvalidHost,
    /// Two Host headers (RFC 9112 section 3.2).
    DuplicateHost,
    /// Host differs from the request target's authority (absolute-form), or an HTTP/2 `host`
    /// from `:authority` (RFC 9113 section 8.3.1).
    HostMismatch {
        http2: bool,
    },
    /// The path has no safe reading.
    BadPath(PathError),
    /// A normalized reading of the path reaches another route than the path as sent.
    PathRoutesElsewhere {
        reading: String,
    },
    NoRoute,
    /// The Host header names another server than the TLS SNI.
    Misdirected {
        sni: String,
        host: String,
    },
    /// The route needs a client certificate and none was sent.
    CertificateRequired,
    /// The route needs a client certificate and the one sent failed verification.
    CertificateInvalid(VerifyError),
    /// A verified identity that the route's allow-list does not admit.
    Forbidden {
        identity: String,
    },
    /// The request body is larger than the route allows.
    BodyTooLarge {
        limit: u64,
    },
    /// The client stopped sending its request body.
    BodyTimeout {
        after: Duration,
    },
    UpstreamUnreachable {
        upstream: String,
    },
    UpstreamTimeout {
        upstream: String,
        after: Duration,
    },
    /// The upstream's `max_connections` are all in use.
    UpstreamBusy {
        upstream: String,
    },
    /// The upstream answered `101` to a request that did not ask for that switch.
    UpstreamBadSwitch {
        upstream: String,
    },
    /// The route's access-token check refused (RFC 6750): 400, 401 or 403 with a
    /// `WWW-Authenticate` challenge for `realm`.
    Token {
        error: BearerError,
        realm: Arc<str>,
    },
    /// The authorization server the route relies on (introspection, JWKS) cannot be reached
    /// or says it is unavailable.
    AuthServerUnavailable {
        server: String,
    },
    /// The authorization server answered with an error or something unreadable (the
    /// gateway's credentials there, or the server, are broken).
    AuthServerError {
        server: String,
    },
    /// `CONNECT`: the gateway is not a forward proxy. With `websocket`, an HTTP/2 WebSocket
    /// (extended CONNECT) on a route that does not forward them.
    Connect {
        websocket: bool,
    },
}

impl Reject {
    /// The status and the plain-text body.
    pub fn answer(&self) -> (StatusCode, String) {
        let status = |code| StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
        match self {
            Reject::MissingHost => (StatusCode::BAD_REQUEST, "the request has no Host".into()),
            Reject::InvalidHost => (
                StatusCode::BAD_REQUEST,
                "the Host is not a host name or IP address with an optional port".into(),
            ),
            Reject::DuplicateHost => {
                (StatusCode::BAD_REQUEST, "the request has more than one Host header".into())
            }
            Reject::HostMismatch { http2: true } => {
                (StatusCode::BAD_REQUEST, "the host header differs from :authority".into())
            }
            Reject::HostMismatch { http2: false } => (
                StatusCode::BAD_REQUEST,
                "the Host header differs from the host in the request target".into(),
            ),
            Reject::BadPath(reason) => (StatusCode::BAD_REQUEST, format!("refused path: {reason}")),
            Reject::PathRoutesElsewhere { .. } => (
                StatusCode::BAD_REQUEST,
                "refused path: once normalized (percent-decoding, ';' parameters, dot segments, \
                 repeated '/') it reaches another route than as sent; send the normalized path"
                    .into(),
            ),
            Reject::NoRoute => (StatusCode::NOT_FOUND, "no route for this host and path".into()),
            Reject::Misdirected { sni, host } => (
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this connection was opened for {sni}; Host {host} must use its own connection"
                ),
            ),
            Reject::CertificateRequired => (
                status(496),
                "client certificate required: this route needs a client certificate and none \
                 was sent"
                    .into(),
            ),
            Reject::CertificateInvalid(reason) => {
                (status(495), format!("client certificate refused: {reason}"))
            }
            Reject::Forbidden { identity } => {
                (StatusCode::FORBIDDEN, format!("client {identity} is not allowed on this route"))
            }
            Reject::BodyTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than this route's limit of {limit} bytes"),
            ),
            Reject::BodyTimeout { after } => (
                StatusCode::REQUEST_TIMEOUT,
                format!("no request body data arrived for {}", human(*after)),
            ),
            Reject::UpstreamUnreachable { upstream } => {
                (StatusCode::BAD_GATEWAY, format!("upstream {upstream} is unreachable"))
            }
            Reject::UpstreamTimeout { upstream, after } => (
                StatusCode::GATEWAY_TIMEOUT,
                format!("upstream {upstream} did not answer within {}", human(*after)),
            ),
            Reject::UpstreamBusy { upstream } => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("upstream {upstream} has no free connection; try again"),
            ),
            Reject::UpstreamBadSwitch { upstream } => (
                StatusCode::BAD_GATEWAY,
                format!("upstream {upstream} switched protocols without being asked to"),
            ),
            Reject::Token { error, .. } => (status(error.status()), error.description()),
            Reject::AuthServerUnavailable { server } => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the authorization server {server} is unavailable; try again"),
            ),
            Reject::AuthServerError { server } => (
                StatusCode::BAD_GATEWAY,
                format!("the authorization server {server} answered with an error"),
            ),
            Reject::Connect { websocket: false } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not served: this gateway is not a forward proxy".into(),
            ),
            Reject::Connect { websocket: true } => {
                (StatusCode::METHOD_NOT_ALLOWED, "this route does not forward WebSockets".into())
            }
        }
    }

    /// A short stable code for the access log and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Reject::MissingHost => "missing_host",
            Reject::InvalidHost => "invalid_host",
            Reject::DuplicateHost => "duplicate_host",
            Reject::HostMismatch { .. } => "host_mismatch",
            Reject::BadPath(reason) => reason.code(),
            Reject::PathRoutesElsewhere { .. } => "path_routes_elsewhere",
            Reject::NoRoute => "no_route",
            Reject::Misdirected { .. } => "misdirected",
            Reject::CertificateRequired => "certificate_required",
            Reject::CertificateInvalid(_) => "certificate_invalid",
            Reject::Forbidden { .. } => "forbidden",
            Reject::BodyTooLarge { .. } => "body_too_large",
            Reject::BodyTimeout { .. } => "body_timeout",
            Reject::UpstreamUnreachable { .. } => "upstream_unreachable",
            Reject::UpstreamTimeout { .. } => "upstream_timeout",
            Reject::UpstreamBusy { .. } => "upstream_busy",
            Reject::UpstreamBadSwitch { .. } => "upstream_bad_switch",
            Reject::Token { error, .. } => match error {
                BearerError::Missing => "token_missing",
                BearerError::InvalidRequest(_) => "token_request_invalid",
                BearerError::InvalidToken(_) => "token_invalid",
                BearerError::InsufficientScope { .. } => "token_scope",
            },
            Reject::AuthServerUnavailable { .. } => "auth_server_unavailable",
            Reject::AuthServerError { .. } => "auth_server_error",
            Reject::Connect { .. } => "connect",
        }
    }

    /// The `WWW-Authenticate` challenge that goes with the answer, if any.
    pub fn challenge(&self) -> Option<String> {
        match self {
            Reject::Token { error, realm } => Some(error.challenge(realm)),
            _ => None,
        }
    }

    /// The most precise code: for a refused certificate, its reason code as in
    /// `X-Client-Verify` (`expired`, `revoked`, …); otherwise [`Reject::code`].
    pub fn detail_code(&self) -> &'static str {
        match self {
            Reject::CertificateInvalid(reason) => reason.code(),
            other => other.code(),
        }
    }

    /// The answer as a response body with a trailing newline.
    pub fn body(&self) -> (StatusCode, Bytes) {
        let (status, mut text) = self.answer();
        text.push('\n');
        (status, Bytes::from(text))
    }
}

fn human(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Certificate problems use nginx's codes with the reason in the body.
    #[test]
    fn certificate_answers_carry_reason() {
        let (s, b) = Reject::CertificateRequired.answer();
        assert_eq!(s.as_u16(), 496);
        assert!(b.contains("none was sent"));
        let (s, b) = Reject::CertificateInvalid(VerifyError::Empty).answer();
        assert_eq!(s.as_u16(), 495);
        assert_eq!(b, "client certificate refused: no certificate was presented");
    }

    /// Upstream failures name the upstream as configured and nothing else.
    #[test]
    fn upstream_answers_name_only_the_upstream() {
        let (s, b) =
            Reject::UpstreamTimeout { upstream: "api".into(), after: Duration::from_secs(2) }
                .answer();
        assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(b, "upstream api did not answer within 2 s");
        let (s, b) = Reject::UpstreamUnreachable { upstream: "api".into() }.answer();
        assert_eq!(s, StatusCode::BAD_GATEWAY);
        assert_eq!(b, "upstream api is unreachable");
    }
}
