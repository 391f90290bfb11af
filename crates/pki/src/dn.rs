//! Distinguished names as strings, the way nginx (`$ssl_client_s_dn`) and RFC 4514 write them:
//! most specific RDN first, `,` between RDNs, `+` inside a multi-valued RDN, special characters
//! escaped with a backslash. `CN=joe,OU=payments,O=Example,C=US`.
//!
//! Also the other way: [`parse`] reads a subject as users copy it from openssl, in the order
//! written (the first attribute is the first RDN of the certificate, as `openssl req -subj`
//! encodes it): the slash form `/C=US/O=Example/CN=joe` and the comma form `openssl x509
//! -subject` prints, `C=US, O=Example, CN=joe`.

use x509_parser::x509::X509Name;

use crate::PkiError;

/// Formats a name per RFC 4514.
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = atv.attr_type().to_id_string();
            match short_name(&oid) {
                Some(short) => out.push_str(short),
                None => out.push_str(&oid),
            }
            out.push('=');
            match atv.as_str() {
                Ok(value) => escape_value(value, &mut out),
                Err(_) => {
                    out.push('#');
                    for b in atv.attr_value().data.iter() {
                        out.push_str(&format!("{b:02x}"));
                    }
                }
            }
        }
    }
    out
}

/// The values of one attribute (for example every `OU`), in certificate order.
pub fn attribute_values(name: &X509Name<'_>, oid: &str) -> Vec<String> {
    name.iter_attributes()
        .filter(|atv| atv.attr_type().to_id_string() == oid)
        .filter_map(|atv| atv.as_str().ok().map(str::to_string))
        .collect()
}

pub const OID_CN: &str = "2.5.4.3";
pub const OID_O: &str = "2.5.4.10";
pub const OID_OU: &str = "2.5.4.11";

fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.5" => "serialNumber",
        "2.5.4.12" => "title",
        "2.5.4.4" => "SN",
        "2.5.4.42" => "GN",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// An attribute type certgate writes into subjects, with its names, OID, upper bound
/// (RFC 5280 appendix A) and ASN.1 string type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute {
    /// The name certgate prints (`CN`, `emailAddress`), as openssl does.
    pub short: &'static str,
    /// The long name (`commonName`), also accepted.
    pub long: &'static str,
    pub oid: &'static [u64],
    /// Upper bound in characters.
    pub max_len: usize,
    pub string: StringType,
}

/// How a value is encoded: UTF8String unless a standard asks for less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringType {
    Utf8,
    /// A-Z, a-z, 0-9, space and `'()+,-./:=` (countryName, serialNumber). ASN.1 allows `?`
    /// too, but the DER writer certgate issues with refuses it (a panic, found by fuzzing), so
    /// it is refused here first.
    Printable,
    /// ASCII (emailAddress, domainComponent).
    Ia5,
}

impl Attribute {
    pub const CN: Attribute = attr("CN", "commonName", &[2, 5, 4, 3], 64, StringType::Utf8);
    pub const C: Attribute = attr("C", "countryName", &[2, 5, 4, 6], 2, StringType::Printable);
    pub const ST: Attribute =
        attr("ST", "stateOrProvinceName", &[2, 5, 4, 8], 128, StringType::Utf8);
    pub const L: Attribute = attr("L", "localityName", &[2, 5, 4, 7], 128, StringType::Utf8);
    pub const O: Attribute = attr("O", "organizationName", &[2, 5, 4, 10], 64, StringType::Utf8);
    pub const OU: Attribute =
        attr("OU", "organizationalUnitName", &[2, 5, 4, 11], 64, StringType::Utf8);
    pub const EMAIL: Attribute =
        attr("emailAddress", "emailAddress", &[1, 2, 840, 113549, 1, 9, 1], 255, StringType::Ia5);

    /// Every attribute `--subject` accepts, in the order the error message lists them.
    pub const ALL: &'static [Attribute] = &[
        Attribute::C,
        Attribute::ST,
        Attribute::L,
        Attribute::O,
        Attribute::OU,
        Attribute::CN,
        Attribute::EMAIL,
        attr("STREET", "streetAddress", &[2, 5, 4, 9], 128, StringType::Utf8),
        attr("serialNumber", "serialNumber", &[2, 5, 4, 5], 64, StringType::Printable),
        attr("title", "title", &[2, 5, 4, 12], 64, StringType::Utf8),
        attr("SN", "surname", &[2, 5, 4, 4], 64, StringType::Utf8),
        attr("GN", "givenName", &[2, 5, 4, 42], 64, StringType::Utf8),
        attr("DC", "domainComponent", &[0, 9, 2342, 19200300, 100, 1, 25], 63, StringType::Ia5),
        attr("UID", "userId", &[0, 9, 2342, 19200300, 100, 1, 1], 256, StringType::Utf8),
    ];

    /// The attribute named `name` (short or long name, any case).
    pub fn named(name: &str) -> Option<Attribute> {
        Attribute::ALL
            .iter()
            .find(|a| a.short.eq_ignore_ascii_case(name) || a.long.eq_ignore_ascii_case(name))
            .copied()
    }

    /// The attribute with this dotted OID.
    pub fn with_oid(oid: &str) -> Option<Attribute> {
        Attribute::ALL.iter().find(|a| a.oid_string() == oid).copied()
    }

    pub fn oid_string(&self) -> String {
        self.oid.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
    }

    /// Why `value` cannot be this attribute's value, if it cannot.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let name = self.short;
        if value.trim().is_empty() {
            return Err(format!("{name} has an empty value"));
        }
        if value.chars().any(char::is_control) {
            return Err(format!("{name} holds a control character"));
        }
        if *self == Attribute::C
            && (value.chars().count() != 2 || !value.chars().all(|c| c.is_ascii_alphabetic()))
        {
            return Err(format!(
                "C is a two-letter country code (ISO 3166) such as US or NL, not {value:?}"
            ));
        }
        if value.chars().count() > self.max_len {
            return Err(format!("{name} is at most {} characters (RFC 5280)", self.max_len));
        }
        match self.string {
            StringType::Utf8 => {}
            StringType::Printable => {
                if let Some(c) = value.chars().find(|c| !is_printable_string_char(*c)) {
                    return Err(format!(
                        "{name} may hold only letters, digits, spaces and '()+,-./:= (an ASN.1 \
                         PrintableString), not {c:?}"
                    ));
                }
            }
            StringType::Ia5 => {
                if !value.is_ascii() {
                    return Err(format!("{name} may hold only ASCII characters"));
                }
            }
        }
        Ok(())
    }
}

const fn attr(
    short: &'static str,
    long: &'static str,
    oid: &'static [u64],
    max_len: usize,
    string: StringType,
) -> Attribute {
    Attribute { short, long, oid, max_len, string }
}

fn is_printable_string_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " '()+,-./:=".contains(c)
}

/// Reads a subject written the way openssl users write or copy it, and returns its attributes
/// in the order written, which is the order they are encoded in (as `openssl req -subj` does).
///
/// - Slash form, as `openssl req -subj` takes it: `/C=US/ST=State/O=YourOrg/CN=x`. A backslash
///   makes the next character literal (`\/`, `\\`).
/// - Comma form, as `openssl x509 -subject` prints it: `C=NL, O=Foo, CN=Bar`, optionally after
///   `subject=`, with spaces around `=` allowed. RFC 4514 escapes (`\,` `\+` `\"` `\\`,
///   `\XX` hex pairs) and double-quoted values (`O = "Foo, Inc."`) are read.
///
/// Attribute names are short or long names in any case (`CN`, `commonName`); unknown names,
/// empty values, values too long for RFC 5280, an attribute given twice and multi-valued RDNs
/// are refused.
pub fn parse(text: &str) -> Result<Vec<(Attribute, String)>, PkiError> {
    let invalid = |reason: String| PkiError::InvalidSubject { value: text.to_string(), reason };
    let trimmed = trim_unescaped_end(text.trim_start());
    let body = match trimmed.get(..8) {
        Some(head) if head.eq_ignore_ascii_case("subject=") => trimmed[8..].trim_start(),
        _ => trimmed,
    };
    if body.is_empty() {
        return Err(invalid("the subject is empty".into()));
    }
    let slash = body.starts_with('/');
    let pieces =
        if slash { split_slash(&body[1..]) } else { split_comma(body) }.map_err(invalid)?;
    let mut attributes = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let (name, raw_value) = split_name(&piece).map_err(&invalid)?;
        let attribute = Attribute::named(name).ok_or_else(|| {
            let known: Vec<&str> = Attribute::ALL.iter().map(|a| a.short).collect();
            invalid(format!("unknown attribute {name:?}; known: {}", known.join(", ")))
        })?;
        let value = if slash { unescape_slash(raw_value) } else { unescape_rfc4514(raw_value) }
            .map_err(|r| invalid(format!("{}: {r}", attribute.short)))?;
        attribute.check(&value).map_err(&invalid)?;
        if attributes.iter().any(|(a, _): &(Attribute, String)| *a == attribute) {
            return Err(invalid(format!(
                "{} is given twice; certgate writes each attribute once",
                attribute.short
            )));
        }
        attributes.push((attribute, value));
    }
    Ok(attributes)
}

/// Splits the slash form (after its leading `/`) at each unescaped `/`.
fn split_slash(body: &str) -> Result<Vec<String>, String> {
    let mut pieces = vec![String::new()];
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next().ok_or("it ends with a lone backslash")?;
                let piece = pieces.last_mut().ok_or("no RDN")?;
                piece.push('\\');
                piece.push(next);
            }
            '/' => pieces.push(String::new()),
            c => pieces.last_mut().ok_or("no RDN")?.push(c),
        }
    }
    if pieces.iter().any(|p| p.trim().is_empty()) {
        return Err("an attribute between two '/' is empty (write /C=US/CN=x)".into());
    }
    Ok(pieces)
}

/// Splits the comma form at each `,` that is neither escaped nor inside double quotes.
fn split_comma(body: &str) -> Result<Vec<String>, String> {
    let pieces = split_unescaped(body, &[',', ';'], false)?;
    if pieces.iter().any(|p| p.trim().is_empty()) {
        return Err("an attribute between two ',' is empty (write C=US, CN=x)".into());
    }
    if pieces.iter().any(|p| split_unescaped(p, &['+'], false).is_ok_and(|parts| parts.len() > 1)) {
        return Err("multi-valued RDNs ('+') are not supported; write a literal + as \\+".into());
    }
    Ok(pieces)
}

/// Splits `text` at each of `separators` that is neither escaped nor (outside the slash form)
/// inside double quotes; escapes are kept for the value reader. Pieces may be empty.
pub(crate) fn split_unescaped(
    text: &str,
    separators: &[char],
    slash: bool,
) -> Result<Vec<String>, String> {
    let mut pieces = vec![String::new()];
    let mut quoted = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let piece = pieces.last_mut().ok_or("no RDN")?;
        match c {
            '\\' => {
                let next = chars.next().ok_or("it ends with a lone backslash")?;
                piece.push('\\');
                piece.push(next);
            }
            '"' if !slash => {
                quoted = !quoted;
                piece.push(c);
            }
            c if !quoted && separators.contains(&c) => pieces.push(String::new()),
            c => piece.push(c),
        }
    }
    if quoted {
        return Err("a double quote is not closed".into());
    }
    Ok(pieces)
}

/// `NAME=value` at the first unescaped `=`; the name is trimmed.
pub(crate) fn split_name(piece: &str) -> Result<(&str, &str), String> {
    let mut escaped = false;
    for (i, c) in piece.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '=' => {
                let name = piece[..i].trim();
                if name.is_empty() {
                    return Err(format!("{:?} has no attribute name before '='", piece.trim()));
                }
                return Ok((name, &piece[i + 1..]));
            }
            _ => {}
        }
    }
    Err(format!("{:?} is not NAME=value", piece.trim()))
}

/// Slash-form value: a backslash makes the next character literal; nothing is trimmed.
pub(crate) fn unescape_slash(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next().ok_or("it ends with a lone backslash")?);
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Comma-form value: spaces around it are dropped (an escaped one is kept); `\X` is X, `\XX`
/// a hex pair (a UTF-8 byte), and a value in double quotes is taken as written.
pub(crate) fn unescape_rfc4514(raw: &str) -> Result<String, String> {
    let value = trim_unescaped_end(raw.trim_start());
    if let Some(inner) = value.strip_prefix('"') {
        let inner = inner.strip_suffix('"').ok_or("text follows a double-quoted value")?;
        return unescape_slash(inner);
    }
    if value.starts_with('#') {
        return Err("hex-encoded values (#...) are not supported; write the text".into());
    }
    let mut bytes = Vec::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next().ok_or("it ends with a lone backslash")?;
                let low = chars.peek().copied();
                match (next.to_digit(16), low.and_then(|l| l.to_digit(16))) {
                    (Some(high), Some(low)) => {
                        chars.next();
                        // Both are below 16, so the pair fits a byte.
                        bytes.push(u8::try_from(high * 16 + low).map_err(|_| "bad hex pair")?);
                    }
                    _ => bytes.extend_from_slice(next.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
            '"' => return Err("a double quote inside a value must be escaped as \\\"".into()),
            c => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    String::from_utf8(bytes).map_err(|_| "its \\XX escapes are not UTF-8".into())
}

/// `text` without trailing whitespace, except an escaped space (`\ `), which is kept.
pub(crate) fn trim_unescaped_end(text: &str) -> &str {
    let mut end = text.len();
    while let Some(c) = text[..end].chars().next_back().filter(|c| c.is_whitespace()) {
        let before = &text[..end - c.len_utf8()];
        if before.ends_with('\\') {
            break;
        }
        end = before.len();
    }
    &text[..end]
}

/// Writes attributes in the comma form [`parse`] reads, in the order given, with RFC 4514
/// escaping: `C=NL, O=Foo\, Inc., CN=Bar`.
pub fn comma_form(attributes: &[(Attribute, String)]) -> String {
    let mut out = String::new();
    for (i, (attribute, value)) in attributes.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(attribute.short);
        out.push('=');
        escape_value(value, &mut out);
    }
    out
}

/// RFC 4514 escaping: specials and a leading `#` or space or trailing space get a backslash;
/// control characters become `\XX` hexpairs.
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let leading = i == 0 && (c == ' ' || c == '#');
        let trailing = i == last && c == ' ';
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            // Control characters (NUL, CR, LF, ESC, DEL, C1) never reach headers or logs
            // raw: each UTF-8 byte becomes an RFC 4514 hexpair.
            _ if c.is_control() => {
                let mut utf8 = [0; 4];
                for b in c.encode_utf8(&mut utf8).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            _ if leading || trailing => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {

    /// A PrintableString attribute refuses `?`: ASN.1 allows it, but the DER writer panics on
    /// it (found by the subject fuzz target), so the user gets an error instead.
    #[test]
    fn printable_attributes_refuse_what_the_encoder_cannot_write() {
        let err = parse("/CN=x/serialNumber=12?").unwrap_err().to_string();
        assert!(err.contains("serialNumber may hold only") && err.contains("'?'"), "{err}");
        assert!(parse("/CN=x/serialNumber=12-34 (a)").is_ok());
    }

    use super::*;
    use x509_parser::prelude::FromDer;

    fn name_der(params: rcgen::DistinguishedName) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = params;
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    /// Names are written most-specific first with RFC 4514 escaping, as nginx does.
    #[test]
    fn rfc4514_reverses_and_escapes() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CountryName, "US");
        dn.push(rcgen::DnType::OrganizationName, "Example, Inc.");
        dn.push(rcgen::DnType::CommonName, " joe+1");
        let der = name_der(dn);
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
        assert_eq!(rfc4514(cert.subject()), r"CN=\ joe\+1,O=Example\, Inc.,C=US");
        assert_eq!(attribute_values(cert.subject(), OID_O), vec!["Example, Inc.".to_string()]);
    }

    /// Control characters in a name come out as hexpairs, so a DN string never carries a raw
    /// CR, LF, ESC, DEL or NUL into a header or a log line.
    #[test]
    fn control_characters_are_escaped_as_hexpairs() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(
            rcgen::DnType::CommonName,
            rcgen::DnValue::Utf8String("a\r\nX-Admin: 1\x1b[31m\x7f\0\u{85}\\".into()),
        );
        let der = name_der(dn);
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
        let text = rfc4514(cert.subject());
        assert_eq!(text, r"CN=a\0D\0AX-Admin: 1\1B[31m\7F\00\C2\85\\");
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }

    fn written(text: &str) -> Vec<(&'static str, String)> {
        parse(text).unwrap().into_iter().map(|(a, v)| (a.short, v)).collect()
    }

    fn pairs(list: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        list.iter().map(|(a, v)| (*a, v.to_string())).collect()
    }

    /// Both forms keep the order written; the comma form takes openssl's `subject=` prefix,
    /// spaces around `=`, quotes and RFC 4514 escapes; long names and any case are accepted.
    #[test]
    fn subjects_parse_in_written_order() {
        let expected = pairs(&[("C", "US"), ("ST", "State"), ("O", "YourOrg"), ("CN", "x")]);
        assert_eq!(written("/C=US/ST=State/O=YourOrg/CN=x"), expected);
        assert_eq!(written("C=US, ST=State, O=YourOrg, CN=x"), expected);
        assert_eq!(written("subject=C = US, ST = State, O = YourOrg, CN = x"), expected);
        assert_eq!(
            written("countryName=US,stateorprovincename=State,o=YourOrg,commonName=x"),
            expected
        );
        assert_eq!(
            written(r#"O = "Foo, Inc.", OU=a\,b\2C\+, CN=\ x\ "#),
            pairs(&[("O", "Foo, Inc."), ("OU", "a,b,+"), ("CN", " x ")])
        );
        assert_eq!(written(r"/O=a\/b+c/CN=d\\e,f"), pairs(&[("O", "a/b+c"), ("CN", r"d\e,f")]));
        assert_eq!(written("CN=caf\\C3\\A9"), pairs(&[("CN", "café")]));
    }

    /// Unknown names, empty values and malformed text are refused with the reason.
    #[test]
    fn bad_subjects_are_refused_with_reason() {
        for (text, fragment) in [
            ("", "empty"),
            ("/", "empty"),
            ("/C=US//CN=x", "between two '/'"),
            ("/C=US/CN=x/", "between two '/'"),
            ("C=US,,CN=x", "between two ','"),
            ("/FOO=x", "unknown attribute \"FOO\"; known: C, ST, L, O, OU, CN"),
            ("/CN=", "CN has an empty value"),
            ("C=US, O= , CN=x", "O has an empty value"),
            ("/C=USA", "two-letter country code"),
            ("/CN", "not NAME=value"),
            ("/=x", "no attribute name"),
            ("CN=a+OU=b", "multi-valued"),
            ("CN=x\\", "lone backslash"),
            ("O=\"Foo", "not closed"),
            ("CN=#0403", "hex-encoded"),
            ("CN=\\FF", "not UTF-8"),
            ("/CN=a\u{7}b", "control character"),
            ("/emailAddress=j\u{e9}@x.test", "ASCII"),
            ("/DC=example/DC=test", "DC is given twice"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(fragment), "{text:?}: {err}");
        }
        let long = format!("/CN={}", "x".repeat(65));
        assert!(parse(&long).unwrap_err().to_string().contains("at most 64"));
    }

    /// What `comma_form` writes, `parse` reads back unchanged.
    #[test]
    fn comma_form_reads_back() {
        let attributes = parse(r#"/O=Foo, Inc.+"q"/OU= lead\/trail /CN=#x\y;z<>="#).unwrap();
        let text = comma_form(&attributes);
        assert_eq!(parse(&text).unwrap(), attributes, "{text}");
    }
}
