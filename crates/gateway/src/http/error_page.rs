//! Error pages users can brand: the gateway's own answers (495, 496, 403, 421, 502, …) with a
//! body from a template and, optionally, another status (nginx's `error_page 495 496 =400
//! /400.html`). The body is chosen by `Accept`: HTML for browsers, JSON for API clients, and
//! the default short text otherwise (curl's `*/*` included).
//!
//! Templates are read and checked once, at load time; a request only fills in `{{status}}`,
//! `{{reason}}` and `{{code}}`, escaped for the template's language, since a reason can quote
//! a certificate's subject, which its holder chose.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::http::reject::Reject;

/// The statuses the gateway answers with itself, which `on` may name.
pub const GATEWAY_STATUSES: [u16; 11] = [400, 403, 404, 408, 413, 421, 495, 496, 502, 503, 504];

/// What a JSON template's `{{reason}}` and `{{code}}` are filled with at load time: it must
/// still be JSON. It starts with a quote, so no escape the template opens (`\u00{{reason}}`)
/// can swallow it.
pub const JSON_SAMPLE: &str = "\"quoted\" <reason> & \\ a\n";

/// The rules of a listener or a route, tried in order.
#[derive(Debug, Default)]
pub struct ErrorPages {
    pub rules: Vec<ErrorPage>,
}

/// One `[[listener.error_page]]` or `[[route.error_page]]`.
#[derive(Debug)]
pub struct ErrorPage {
    /// The gateway answers it applies to; empty: all of them.
    pub on: Vec<u16>,
    /// The status sent instead, if any.
    pub status: Option<StatusCode>,
    pub html: Option<Template>,
    pub json: Option<Template>,
}

/// A page with its placeholders found, ready to fill in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Status,
    Reason,
    Code,
}

/// The language of a template, which decides how values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Html,
    Json,
}

impl Template {
    /// Splits `text` at its placeholders; a `{{name}}` with another name is refused.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let Some(len) = rest[open..].find("}}") else { break };
            let name = rest[open + 2..open + len].trim();
            let part = match name {
                "status" => Part::Status,
                "reason" => Part::Reason,
                "code" => Part::Code,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{{{other}}}}}: use {{{{status}}}}, {{{{reason}}}} \
                         or {{{{code}}}}"
                    ));
                }
            };
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            parts.push(part);
            rest = &rest[open + len + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// The page for one answer, each value escaped for `language`.
    pub fn render(&self, language: Language, status: u16, reason: &str, code: &str) -> String {
        let mut out = String::with_capacity(self.parts.iter().map(Part::len).sum::<usize>() + 128);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Status => {
                    let _ = write!(out, "{status}");
                }
                Part::Reason => escape(&mut out, language, reason),
                Part::Code => escape(&mut out, language, code),
            }
        }
        out
    }
}

impl Part {
    fn len(&self) -> usize {
        match self {
            Part::Text(t) => t.len(),
            _ => 0,
        }
    }
}

/// Escapes `value` for HTML text and attributes, or for the inside of a JSON string (with
/// `<`, `>` and `&` escaped too, so the JSON stays safe inside an HTML page).
fn escape(out: &mut String, language: Language, value: &str) {
    for c in value.chars() {
        match (language, c) {
            (Language::Html, '&') => out.push_str("&amp;"),
            (Language::Html, '<') => out.push_str("&lt;"),
            (Language::Html, '>') => out.push_str("&gt;"),
            (Language::Html, '"') => out.push_str("&quot;"),
            (Language::Html, '\'') => out.push_str("&#39;"),
            (Language::Json, '"') => out.push_str("\\\""),
            (Language::Json, '\\') => out.push_str("\\\\"),
            (Language::Json, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') | (_, '\0'..='\u{1f}') => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            (_, c) => out.push(c),
        }
    }
}

/// What the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Html,
    Json,
    Text,
}

/// Reads `Accept`: the media type with the highest quality among `text/html` (and
/// `application/xhtml+xml`) and `application/json` (and `*/*+json`); the first listed wins a
/// tie. Wildcards (`*/*`, `text/*`) ask for nothing in particular: they get the text.
pub fn wanted(headers: &HeaderMap) -> Wanted {
    let mut best = (0.0f32, Wanted::Text);
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut params = range.split(';');
            let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = params
                .filter_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()))
                .next()
                .unwrap_or(1.0);
            let kind = match media.as_str() {
                "text/html" | "application/xhtml+xml" => Wanted::Html,
                "application/json" => Wanted::Json,
                m if m.starts_with("application/") && m.ends_with("+json") => Wanted::Json,
                _ => continue,
            };
            if q > best.0 {
                best = (q, kind);
            }
        }
    }
    best.1
}

/// The answer a rule gives, if one applies: status, content type and body.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: String,
    /// Whether the body depended on `Accept` (the response then says `Vary: Accept`).
    pub varies: bool,
}

impl ErrorPages {
    /// The first rule that applies to `reject`, filled in for what the client wants.
    pub fn answer(&self, reject: &Reject, wanted: Wanted) -> Option<Answer> {
        let (status, reason) = reject.answer();
        let rule =
            self.rules.iter().find(|r| r.on.is_empty() || r.on.contains(&status.as_u16()))?;
        let sent = rule.status.unwrap_or(status);
        let code = reject.detail_code();
        let page = match wanted {
            Wanted::Html => {
                rule.html.as_ref().map(|t| (t, Language::Html, "text/html; charset=utf-8"))
            }
            Wanted::Json => rule.json.as_ref().map(|t| (t, Language::Json, "application/json")),
            Wanted::Text => None,
        };
        let varies = rule.html.is_some() || rule.json.is_some();
        Some(match page {
            Some((template, language, content_type)) => Answer {
                status: sent,
                content_type: Some(HeaderValue::from_static(content_type)),
                body: template.render(language, sent.as_u16(), &reason, code),
                varies,
            },
            None => Answer { status: sent, content_type: None, body: reason + "\n", varies },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use certgate_pki::verify::VerifyError;

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        h
    }

    /// Browsers get HTML, API clients JSON, curl and wildcards the text; quality decides.
    #[test]
    fn accept_chooses_the_page() {
        let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";
        assert_eq!(wanted(&accept(chrome)), Wanted::Html);
        assert_eq!(wanted(&accept("application/json")), Wanted::Json);
        assert_eq!(wanted(&accept("application/problem+json")), Wanted::Json);
        assert_eq!(wanted(&accept("*/*")), Wanted::Text);
        assert_eq!(wanted(&HeaderMap::new()), Wanted::Text);
        assert_eq!(wanted(&accept("text/html;q=0.5, application/json")), Wanted::Json);
        assert_eq!(wanted(&accept("application/json, text/html")), Wanted::Json);
        assert_eq!(wanted(&accept("text/html;q=0")), Wanted::Text);
    }

    /// Values are escaped for their language: markup and quotes in a certificate's subject
    /// cannot break out of the page.
    #[test]
    fn values_are_escaped_for_the_template() {
        let html = Template::parse("<p title=\"{{reason}}\">{{status}} {{ code }}</p>").unwrap();
        let out = html.render(Language::Html, 495, "CN=<script>\"'&", "expired");
        assert_eq!(out, "<p title=\"CN=&lt;script&gt;&quot;&#39;&amp;\">495 expired</p>");
        let json = Template::parse("{\"status\": {{status}}, \"error\": \"{{reason}}\"}").unwrap();
        let out = json.render(Language::Json, 400, "a\"b\\c\n</script>\u{2028}", "x");
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["error"], "a\"b\\c\n</script>\u{2028}");
        assert!(!out.contains("</script>"), "{out}");
        assert!(Template::parse("{{nope}}").unwrap_err().contains("{{nope}}"));
    }

    /// A rule applies to the statuses it names, may change the status, and falls back to the
    /// text when the client wants a kind of page the rule has none of.
    #[test]
    fn rules_apply_by_status() {
        let pages = ErrorPages {
            rules: vec![ErrorPage {
                on: vec![495, 496],
                status: Some(StatusCode::BAD_REQUEST),
                html: Some(Template::parse("<h1>{{status}}: {{code}}</h1>").unwrap()),
                json: None,
            }],
        };
        let expired = Reject::CertificateInvalid(VerifyError::Empty);
        let a = pages.answer(&expired, Wanted::Html).unwrap();
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_eq!(a.body, "<h1>400: no_certificate</h1>");
        let a = pages.answer(&Reject::CertificateRequired, Wanted::Json).unwrap();
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert!(a.content_type.is_none() && a.varies);
        assert!(a.body.starts_with("client certificate required"), "{}", a.body);
        assert!(pages.answer(&Reject::NoRoute, Wanted::Html).is_none());
    }
}
