//! `application/x-www-form-urlencoded` request bodies (RFC 6749 section 3.2): bounded, and a
//! parameter sent twice is an error, never "the last one wins".

use std::collections::BTreeMap;

/// The largest form body read.
pub const MAX_FORM_BYTES: usize = 16 * 1024;
/// The most parameters a form may have.
pub const MAX_PARAMS: usize = 32;

/// The parameters of one form. Empty values count as omitted (RFC 6749 section 3.1).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Form {
    pairs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("the parameter {0} is sent more than once")]
    Repeated(String),
    #[error("the form has more than {MAX_PARAMS} parameters")]
    TooMany,
    #[error("the form is larger than {MAX_FORM_BYTES} bytes")]
    TooLarge,
}

impl Form {
    pub fn parse(body: &[u8]) -> Result<Form, FormError> {
        if body.len() > MAX_FORM_BYTES {
            return Err(FormError::TooLarge);
        }
        let mut pairs = BTreeMap::new();
        let mut seen = 0usize;
        for (name, value) in form_urlencoded::parse(body) {
            seen += 1;
            if seen > MAX_PARAMS {
                return Err(FormError::TooMany);
            }
            if pairs.insert(name.to_string(), value.to_string()).is_some() {
                return Err(FormError::Repeated(name.into_owned()));
            }
        }
        Ok(Form { pairs })
    }

    /// The value of `name`, when given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused_and_empty_ones_are_absent() {
        let form = Form::parse(b"grant_type=client_credentials&scope=&client_id=a%20b").unwrap();
        assert_eq!(form.get("grant_type"), Some("client_credentials"));
        assert_eq!(form.get("scope"), None);
        assert_eq!(form.get("client_id"), Some("a b"));
        assert_eq!(
            Form::parse(b"scope=a&grant_type=x&scope=b").unwrap_err(),
            FormError::Repeated("scope".into())
        );
        // A repeat with an empty value is still a repeat.
        assert!(Form::parse(b"scope=a&scope=").is_err());
        let many: Vec<String> = (0..40).map(|i| format!("p{i}=1")).collect();
        assert_eq!(Form::parse(many.join("&").as_bytes()).unwrap_err(), FormError::TooMany);
        assert_eq!(Form::parse(&[b'a'; MAX_FORM_BYTES + 1]).unwrap_err(), FormError::TooLarge);
    }
}
