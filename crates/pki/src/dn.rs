//! Distinguished names as strings, the way nginx (`$ssl_client_s_dn`) and RFC 4514 write them:
//! most specific RDN first, `,` between RDNs, `+` inside a multi-valued RDN, special characters
//! escaped with a backslash. `CN=joe,OU=payments,O=Example,C=US`.

use x509_parser::x509::X509Name;

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
}
