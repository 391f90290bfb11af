//! Proof of possession (RFC 8705 section 3): a token bound to a certificate (`cnf.x5t#S256`)
//! is only good on a connection that presented that certificate. The thumbprint comes from
//! the connection's TLS layer, never from a header, and is compared in constant time.

/// Why a token's binding refuses this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    #[error("the access token is bound to a client certificate and none was presented")]
    NoCertificate,
    #[error("the access token is bound to another client certificate")]
    Mismatch,
    #[error("this route accepts only certificate-bound access tokens (cnf x5t#S256)")]
    NotBound,
}

/// Whether the token's `cnf.x5t#S256` (if any) fits the certificate the connection presented
/// (its `x5t#S256`, if any). `required`: a token without a binding is refused too.
pub fn check(
    token_x5t: Option<&str>,
    presented_x5t: Option<&str>,
    required: bool,
) -> Result<(), BindingError> {
    match (token_x5t, presented_x5t) {
        (None, _) if required => Err(BindingError::NotBound),
        (None, _) => Ok(()),
        (Some(_), None) => Err(BindingError::NoCertificate),
        (Some(bound), Some(presented)) => aws_lc_rs::constant_time::verify_slices_are_equal(
            bound.as_bytes(),
            presented.as_bytes(),
        )
        .map_err(|_| BindingError::Mismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_token_needs_its_own_certificate() {
        assert_eq!(check(Some("abc"), Some("abc"), true), Ok(()));
        assert_eq!(check(Some("abc"), Some("abd"), false), Err(BindingError::Mismatch));
        assert_eq!(check(Some("abc"), Some("ab"), false), Err(BindingError::Mismatch));
        assert_eq!(check(Some("abc"), None, false), Err(BindingError::NoCertificate));
        assert_eq!(check(None, Some("abc"), true), Err(BindingError::NotBound));
        assert_eq!(check(None, None, false), Ok(()));
    }
}
