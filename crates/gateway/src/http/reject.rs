//! Every refusal the gateway answers itself, mapped to a status and a short body in one
//! exhaustive match: a new kind of refusal does not compile until it has an answer.

use std::time::Duration;

use bytes::Bytes;
use certgate_pki::verify::VerifyError;
use http::StatusCode;

/// Why the gateway answers instead of the upstream.
#[derive(Debug)]
pub enum Reject {
    /// The request has no usable Host / authority.
    MissingHost,
    /// The path could be read differently by the upstream (`..`, `//`, encoded `/`).
    AmbiguousPath,
    NoRoute {
        host: String,
        path: String,
    },
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
    UpstreamUnreachable {
        upstream: String,
        cause: String,
    },
    UpstreamTimeout {
        upstream: String,
        after: Duration,
    },
}

impl Reject {
    /// The status and the plain-text body.
    pub fn answer(&self) -> (StatusCode, String) {
        let status = |code| StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
        match self {
            Reject::MissingHost => (StatusCode::BAD_REQUEST, "the request has no Host".into()),
            Reject::AmbiguousPath => (
                StatusCode::BAD_REQUEST,
                "the request path has '.' or '..' segments, '//', '\\', or encoded '/', '.' or \
                 '\\'; send the normalized path"
                    .into(),
            ),
            Reject::NoRoute { host, path } => {
                (StatusCode::NOT_FOUND, format!("no route for host {host} and path {path}"))
            }
            Reject::Misdirected { sni, host } => (
                StatusCode::MISDIRECTED_REQUEST,
                format!("this connection was opened for {sni}; Host {host} must use its own connection"),
            ),
            Reject::CertificateRequired => (
                status(496),
                "client certificate required: this route needs a client certificate and none was sent".into(),
            ),
            Reject::CertificateInvalid(reason) => {
                (status(495), format!("client certificate refused: {reason}"))
            }
            Reject::Forbidden { identity } => {
                (StatusCode::FORBIDDEN, format!("client {identity} is not allowed on this route"))
            }
            Reject::UpstreamUnreachable { upstream, cause } => {
                (StatusCode::BAD_GATEWAY, format!("upstream {upstream} failed: {cause}"))
            }
            Reject::UpstreamTimeout { upstream, after } => (
                StatusCode::GATEWAY_TIMEOUT,
                format!("upstream {upstream} did not answer within {}", human(*after)),
            ),
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
        let (s, _) =
            Reject::UpstreamTimeout { upstream: "api".into(), after: Duration::from_secs(2) }
                .answer();
        assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    }
}
