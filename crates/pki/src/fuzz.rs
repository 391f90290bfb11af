//! Fuzz target bodies (cargo feature `testkit`): each `pub fn(&[u8])` makes the call under test
//! and checks its oracle, so the libFuzzer targets in `fuzz/` and the stable replay test
//! (`tests/fuzz_replay.rs`) run identical code. See `fuzz/README.md`.
//!
//! Anything an input can reach may fail with an error; what must never happen is a panic, a
//! hang, or an answer that breaks the oracle written next to each call.
//!
//! This is test support: an oracle failure is what it exists to report, so it panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Mutex, OnceLock};

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::ca::{Authority, InitOptions};
use crate::issue::Subject;
use crate::names::San;
use crate::profile::Profile;
use crate::testkit::TestPki;
use crate::validity::Validity;
use crate::verify::{TrustStore, VerifyPolicy};

/// CSR parsing and the signing policy: a CSR that parses is signed by a real CA directory,
/// and the certificate issued is never a CA, carries exactly the CSR's reduced SANs (each of
/// which reads back as the same SAN), and no SAN holds CR, LF or NUL.
///
/// The input is tried as a CSR (PEM or DER), and, since mutations rarely keep a signature
/// valid, also as lines describing a well-signed CSR ([`csr_from_lines`]).
pub fn csr(data: &[u8]) {
    check_csr(data);
    if let Some(der) = csr_from_lines(data) {
        check_csr(&der);
    }
}

/// A CSR signed by a fixed key, built from the input's lines: `C<cn>`, `O<org>`, `D<dns>`,
/// `U<uri>`, `E<email>`, `I<4 or 16 bytes>`, `X` (ask to be a CA). `None` for PEM or DER input,
/// or values rcgen refuses (SANs must be ASCII).
fn csr_from_lines(data: &[u8]) -> Option<Vec<u8>> {
    use rcgen::{DnType, DnValue, SanType, string::Ia5String};
    if data.first() == Some(&0x30) || data.starts_with(b"-----") {
        return None;
    }
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    for line in data.split(|b| *b == b'\n').take(8) {
        let Some((&kind, rest)) = line.split_first() else { continue };
        let text = || String::from_utf8_lossy(rest).into_owned();
        let ia5 = || Ia5String::try_from(text()).ok();
        match kind {
            b'C' => params.distinguished_name.push(DnType::CommonName, DnValue::Utf8String(text())),
            b'O' => params
                .distinguished_name
                .push(DnType::OrganizationName, DnValue::Utf8String(text())),
            b'D' => params.subject_alt_names.push(SanType::DnsName(ia5()?)),
            b'U' => params.subject_alt_names.push(SanType::URI(ia5()?)),
            b'E' => params.subject_alt_names.push(SanType::Rfc822Name(ia5()?)),
            b'I' => {
                let ip = crate::identity::ip_from_bytes(rest)?;
                params.subject_alt_names.push(SanType::IpAddress(ip));
            }
            b'X' => params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained),
            _ => {}
        }
    }
    static KEY: OnceLock<rcgen::KeyPair> = OnceLock::new();
    let key = KEY.get_or_init(|| rcgen::KeyPair::generate().expect("key"));
    Some(params.serialize_request(key).ok()?.der().to_vec())
}

fn check_csr(data: &[u8]) {
    let Ok(csr) = crate::csr::parse(data, "fuzz.csr") else { return };
    for san in &csr.sans {
        assert_no_line_breaks(&san.value());
    }
    let mut ca = authority().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let Ok(issued) = ca.sign_csr(&csr, None, Validity::Days(1), None, &[], |_| Ok(())) else {
        return;
    };
    let (_, cert) = X509Certificate::from_der(&issued.cert_der).expect("issued cert parses");
    let bc = cert.basic_constraints().expect("one basicConstraints extension");
    assert!(bc.is_none_or(|bc| !bc.value.ca), "a CSR was signed as a CA");
    let mut sans = Vec::new();
    if let Some(ext) = cert.subject_alternative_name().expect("one SAN extension") {
        for name in &ext.value.general_names {
            let value = match name {
                GeneralName::DNSName(v) | GeneralName::URI(v) | GeneralName::RFC822Name(v) => {
                    (*v).to_string()
                }
                GeneralName::IPAddress(b) => {
                    crate::identity::ip_from_bytes(b).expect("4 or 16 bytes").to_string()
                }
                other => panic!("issued a SAN of a kind the policy never signs: {other:?}"),
            };
            assert_no_line_breaks(&value);
            let reparsed = San::parse(&value).expect("an issued SAN reads back");
            assert_eq!(reparsed.value(), value, "an issued SAN is not in its canonical form");
            sans.push(reparsed);
        }
    }
    // A CSR without SANs is signed with the CN as its SAN only when it was one of a server's.
    let expected: Vec<San> = if csr.sans.is_empty() {
        csr.cn_san.iter().filter(|_| issued.profile != Profile::Client).cloned().collect()
    } else {
        csr.sans.clone()
    };
    assert_eq!(sans, expected, "the certificate's SANs differ from the CSR's reduced SANs");
    assert_eq!(issued.sans, expected);
}

/// Subject parsing (`--subject`): text that parses is encoded into a certificate whose
/// subject holds exactly the parsed attributes, one per RDN, in the order written, each with
/// its OID and value; and the comma form of the result parses back to the same attributes.
pub fn subject(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(subject) = Subject::parse(text) else { return };
    assert!(!subject.attributes().is_empty(), "a subject parsed to no attributes: {text:?}");
    let comma = subject.to_string();
    let reread = Subject::parse(&comma).expect("the comma form of a parsed subject reads back");
    assert_eq!(reread, subject, "{text:?} printed as {comma:?} reads back differently");
    let now = ::time::OffsetDateTime::now_utc();
    let params = crate::issue::leaf_params(
        &subject,
        &[],
        Profile::Client,
        false,
        now,
        now + ::time::Duration::days(1),
    )
    .expect("a parsed subject encodes");
    static KEY: OnceLock<rcgen::KeyPair> = OnceLock::new();
    let key = KEY.get_or_init(|| rcgen::KeyPair::generate().expect("key"));
    let der = params.self_signed(key).expect("a parsed subject signs").der().to_vec();
    let (_, cert) = X509Certificate::from_der(&der).expect("the certificate parses");
    let encoded: Vec<(String, String)> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            assert_eq!(rdn.iter().count(), 1, "one attribute per RDN");
            let atv = rdn.iter().next().expect("one attribute");
            (atv.attr_type().to_id_string(), atv.as_str().expect("a string value").to_string())
        })
        .collect();
    let written: Vec<(String, String)> =
        subject.attributes().iter().map(|(a, v)| (a.oid_string(), v.clone())).collect();
    assert_eq!(encoded, written, "{text:?} is not encoded as written");
}

/// Certificate loading and inspection: the PEM readers, `inspect`, `PeerIdentity`, and a
/// trust store whose anchor is the input. Never panics; a TestPki leaf verifies against its
/// own root and against nothing else. Run with `-timeout` to bound time per input.
pub fn cert_load(data: &[u8]) {
    let _ = crate::pem::first_label(data);
    let _ = crate::pem::decode_block(data, "CERTIFICATE");
    let _ = crate::pem::decode_block_any(data, "CERTIFICATE");
    let _ = crate::inspect::inspect(data, "fuzz");
    let _ = crate::identity::PeerIdentity::from_der(data);
    let certs = crate::pem::certs_from_bytes(data).unwrap_or_default();
    for der in certs.iter().take(4) {
        let _ = crate::identity::PeerIdentity::from_der(der);
        let _ = crate::inspect::cert_info(der);
    }
    let fx = fixture();
    let anchors = if certs.is_empty() { vec![CertificateDer::from(data.to_vec())] } else { certs };
    let is_our_root = anchors.iter().any(|a| a.as_ref() == fx.root.as_ref());
    let Ok(store) = TrustStore::from_der(anchors, vec![]) else { return };
    let verdict = store.verify(&fx.chain, &VerifyPolicy::client(), UnixTime::now());
    if is_our_root {
        assert!(verdict.is_ok(), "a TestPki leaf is refused by a store holding its root");
    }
}

/// CRL loading: a CRL from the input (DER, or the first PEM `X509 CRL` block) in a trust store
/// with the TestPki root, then a TestPki leaf verified against it. Never panics.
pub fn crl_load(data: &[u8]) {
    let _ = crate::inspect::inspect(data, "fuzz.crl");
    let der = if data.first() == Some(&0x30) {
        data.to_vec()
    } else {
        match crate::pem::decode_block(data, "X509 CRL") {
            Ok(der) => der,
            Err(_) => return,
        }
    };
    let fx = fixture();
    let crl = CertificateRevocationListDer::from(der);
    let Ok(store) = TrustStore::from_der(vec![fx.root.clone()], vec![crl]) else { return };
    let _ = store.verify(&fx.chain, &VerifyPolicy::client(), UnixTime::now());
    let _ = store.verify(
        &fx.chain,
        &VerifyPolicy { full_chain_crls: true, ..VerifyPolicy::client() },
        UnixTime::now(),
    );
}

/// A TestPki made once: its root and a client leaf's chain.
struct Fixture {
    root: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let pki = TestPki::new();
        let leaf = pki.client("fuzz", &["spiffe://fuzz.test/leaf"]);
        Fixture { root: pki.root_der(), chain: leaf.chain_der() }
    })
}

/// A CA directory made once, in a temporary directory that lives as long as the process.
fn authority() -> &'static Mutex<Authority> {
    static CA: OnceLock<Mutex<Authority>> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("certgate-fuzz-ca").tempdir().expect("tempdir");
        let ca = Authority::init(&dir.path().join("ca"), &InitOptions::default()).expect("CA");
        // The directory must outlive the process's use of it; it is left behind on exit.
        std::mem::forget(dir);
        Mutex::new(ca)
    })
}

fn assert_no_line_breaks(value: &str) {
    assert!(!value.contains(['\r', '\n', '\0']), "a SAN holds CR, LF or NUL: {value:?}");
}

/// Replays every checked-in input of `target` (`fuzz/corpus/<target>` and
/// `fuzz/regressions/<target>` under `fuzz_dir`) through `run`, each on a thread with the 8 MiB
/// stack of a process's main thread, where libFuzzer runs them. Panics naming the input that
/// fails its oracle, and when the corpus is missing or empty, so a wrong path cannot pass.
pub fn replay(fuzz_dir: &std::path::Path, target: &str, run: fn(&[u8])) {
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            assert!(kind == "regressions", "no corpus directory {}", dir.display());
            continue;
        };
        let before = files.len();
        files.extend(
            entries.map(|e| e.expect("read a corpus entry").path()).filter(|p| p.is_file()),
        );
        assert!(kind == "regressions" || files.len() > before, "{} is empty", dir.display());
    }
    files.sort();
    for file in files {
        let data = std::fs::read(&file).expect("read a corpus input");
        let outcome = std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || run(&data))
            .expect("spawn a replay thread")
            .join();
        assert!(outcome.is_ok(), "fuzz/{target}: {} fails its oracle", file.display());
    }
}
