//! The two ways OAuth says no: token-endpoint errors (RFC 6749 section 5.2), a JSON body, and
//! resource-server errors (RFC 6750 section 3), a `WWW-Authenticate` challenge.

use std::fmt;

/// RFC 6749 section 5.2 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    /// The server cannot answer now (its token store or signing failed): 503. Not in RFC 6749
    /// section 5.2, which has no server-side error for the token endpoint; the name is the
    /// one section 4.1.2.1 gives the same situation.
    TemporarilyUnavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

/// An error answer of the token or introspection endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: ErrorCode,
    /// Human-readable, for the client's developer (`error_description`).
    pub description: String,
    /// What the server's log gets in addition (a file, a library error), never the client.
    pub detail: Option<String>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> OAuthError {
        OAuthError { code, description: description.into(), detail: None }
    }

    pub fn invalid_request(description: impl Into<String>) -> OAuthError {
        OAuthError::new(ErrorCode::InvalidRequest, description)
    }

    pub fn invalid_client(description: impl Into<String>) -> OAuthError {
        OAuthError::new(ErrorCode::InvalidClient, description)
    }

    /// The server's own failure (the client may retry); `detail` goes to the log only.
    pub fn unavailable(description: impl Into<String>, detail: impl ToString) -> OAuthError {
        OAuthError {
            detail: Some(detail.to_string()),
            ..OAuthError::new(ErrorCode::TemporarilyUnavailable, description)
        }
    }

    /// 401 for a failed client authentication (RFC 6749 section 5.2 allows 400 or 401; 401
    /// tells every client library the same thing), 503 for the server's own failure, 400
    /// otherwise.
    pub fn status(&self) -> u16 {
        match self.code {
            ErrorCode::InvalidClient => 401,
            ErrorCode::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }

    /// `{"error": "...", "error_description": "..."}`.
    pub fn body(&self) -> String {
        serde_json::json!({
            "error": self.code.as_str(),
            "error_description": self.description,
        })
        .to_string()
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)?;
        match &self.detail {
            Some(detail) => write!(f, " ({detail})"),
            None => Ok(()),
        }
    }
}

/// Why a resource server refuses a request (RFC 6750 section 3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BearerError {
    /// No bearer token at all: 401 with a bare challenge, no error code (section 3.1).
    Missing,
    /// Two tokens, or a token in a place the gateway does not read: 400.
    InvalidRequest(String),
    /// A token that is malformed, badly signed, expired, for someone else, or bound to
    /// another certificate: 401.
    InvalidToken(String),
    /// A good token without the scope the route needs: 403.
    InsufficientScope { needed: String },
}

impl BearerError {
    pub fn status(&self) -> u16 {
        match self {
            BearerError::Missing | BearerError::InvalidToken(_) => 401,
            BearerError::InvalidRequest(_) => 400,
            BearerError::InsufficientScope { .. } => 403,
        }
    }

    pub fn code(&self) -> Option<&'static str> {
        match self {
            BearerError::Missing => None,
            BearerError::InvalidRequest(_) => Some("invalid_request"),
            BearerError::InvalidToken(_) => Some("invalid_token"),
            BearerError::InsufficientScope { .. } => Some("insufficient_scope"),
        }
    }

    /// The reason in words, for the body and the log.
    pub fn description(&self) -> String {
        match self {
            BearerError::Missing => "a bearer access token is required".into(),
            BearerError::InvalidRequest(why) | BearerError::InvalidToken(why) => why.clone(),
            BearerError::InsufficientScope { needed } => {
                format!("the access token lacks the scope this route needs: {needed}")
            }
        }
    }

    /// The `WWW-Authenticate` value: `Bearer realm="api", error="invalid_token",
    /// error_description="..."`. Quoted strings carry no `"` or `\` (RFC 6750 section 3
    /// limits them to printable ASCII without those), so they are replaced.
    pub fn challenge(&self, realm: &str) -> String {
        let mut out = format!("Bearer realm=\"{}\"", quoted(realm));
        if let Some(code) = self.code() {
            out.push_str(&format!(
                ", error=\"{code}\", error_description=\"{}\"",
                quoted(&self.description())
            ));
        }
        if let BearerError::InsufficientScope { needed } = self {
            out.push_str(&format!(", scope=\"{}\"", quoted(needed)));
        }
        out
    }
}

/// Printable ASCII without `"` and `\`; anything else becomes `'` or `?`.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_follow_rfc_6750() {
        assert_eq!(BearerError::Missing.challenge("api"), "Bearer realm=\"api\"");
        assert_eq!(
            BearerError::InvalidToken("bound to \"another\" certificate ✓".into()).challenge("api"),
            "Bearer realm=\"api\", error=\"invalid_token\", \
             error_description=\"bound to 'another' certificate ?\""
        );
        let scope = BearerError::InsufficientScope { needed: "accounts:write".into() };
        assert_eq!(scope.status(), 403);
        assert!(scope.challenge("api").ends_with("scope=\"accounts:write\""));
    }

    #[test]
    fn token_endpoint_errors_are_json_with_401_for_client_authentication() {
        let e = OAuthError::invalid_client("client certificate was not provided");
        assert_eq!(e.status(), 401);
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["error"], "invalid_client");
        assert_eq!(OAuthError::new(ErrorCode::InvalidScope, "x").status(), 400);
    }
}
