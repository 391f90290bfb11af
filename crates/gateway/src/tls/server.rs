//! Server-side TLS for a listener.
//!
//! - Certificates are chosen by SNI from a table built at load time (exact name, then
//!   `*.parent` wildcard, then the first certificate as default).
//! - Client certificates are checked by [`ClientVerifier`], which runs
//!   `certgate_pki::verify::TrustStore::verify`: the same code as `certgate verify`,
//!   through a per-listener [`CachingVerifier`], so a chain that verified is not verified
//!   again while its verdict holds (the client's proof of key possession is checked on every
//!   handshake).
//!   - `required`: a missing or invalid certificate fails the handshake.
//!   - `optional` / `dangerous_optional_no_ca`: the handshake proves possession of the key
//!     (CertificateVerify) and the chain is verified once right after it; routes then decide
//!     (496/495) with the reason.
//! - [`ClientAuth`] owns the verifier of each mode that asks for certificates, so a
//!   `required` listener without trust anchors cannot be built.
//! - Session resumption is off on listeners that ask for client certificates: a resumed
//!   session would restore a client identity without running the verifier again (so a
//!   revoked certificate could resume). Listeners without client auth keep rustls's per-config
//!   cache, which is never shared across configs.

use std::collections::HashMap;
use std::sync::Arc;

use certgate_pki::chain_cache::CachingVerifier;
use certgate_pki::identity::PeerIdentity;
use certgate_pki::verify::VerifyError;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

/// How a listener treats client certificates. Each mode that asks for a certificate owns its
/// verifier, so a listener that requires certificates cannot exist without trust anchors.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// No certificate is asked for.
    Off,
    /// A certificate is asked for; routes decide whether one is needed.
    Optional(Arc<CachingVerifier>),
    /// A valid certificate is required in the handshake.
    Required(Arc<CachingVerifier>),
    /// Like `Optional`, and the details of a certificate that failed verification are still
    /// forwarded (with `FAILED:reason`) for the upstream to judge. Dangerous: the upstream must
    /// check the verify header.
    DangerousOptionalNoCa(Arc<CachingVerifier>),
}

impl ClientAuth {
    /// The verifier of a mode that asks for certificates.
    pub fn verifier(&self) -> Option<&Arc<CachingVerifier>> {
        match self {
            ClientAuth::Off => None,
            ClientAuth::Optional(v)
            | ClientAuth::Required(v)
            | ClientAuth::DangerousOptionalNoCa(v) => Some(v),
        }
    }

    /// Whether the details of a certificate that failed verification are forwarded.
    pub fn forwards_failed(&self) -> bool {
        matches!(self, ClientAuth::DangerousOptionalNoCa(_))
    }
}

/// The TLS side of a listener.
pub struct ListenerTls {
    pub config: Arc<ServerConfig>,
    pub client_auth: ClientAuth,
}

/// What the handshake established about the client.
#[derive(Debug, Clone)]
pub enum ClientCert {
    /// No certificate was presented (or none was asked for).
    None,
    /// A certificate that verified, with the intermediates of its verified path (leaf side
    /// first; certificates the client sent that are not on the path are left out).
    Verified { identity: Arc<PeerIdentity>, intermediates: Vec<CertificateDer<'static>> },
    /// A certificate that proved possession of its key but failed verification.
    Failed { reason: VerifyError, identity: Option<Arc<PeerIdentity>> },
}

/// Why a listener's TLS could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ListenerTlsError {
    #[error("TLS versions")]
    Versions(#[source] rustls::Error),
    #[error("at least one server certificate is needed")]
    NoCertificate,
    #[error("server certificate")]
    Certificate(#[source] certgate_pki::PkiError),
}

impl ListenerTls {
    /// Builds the rustls config.
    pub fn new(
        certs: Vec<Arc<CertifiedKey>>,
        client_auth: ClientAuth,
        min_tls13: bool,
    ) -> Result<ListenerTls, ListenerTlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if min_tls13 {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS12, &rustls::version::TLS13]
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(ListenerTlsError::Versions)?;
        let resolver = Arc::new(SniResolver::new(certs)?);
        let mut config = match client_auth.verifier() {
            Some(chains) => {
                let verifier = ClientVerifier {
                    chains: chains.clone(),
                    mandatory: matches!(client_auth, ClientAuth::Required(_)),
                    hints: chains
                        .store()
                        .anchor_subjects()
                        .iter()
                        .map(|s| DistinguishedName::from(s.clone()))
                        .collect(),
                    algorithms: provider.signature_verification_algorithms,
                };
                builder.with_client_cert_verifier(Arc::new(verifier)).with_cert_resolver(resolver)
            }
            None => builder.with_no_client_auth().with_cert_resolver(resolver),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if client_auth.verifier().is_some() {
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        Ok(ListenerTls { config: Arc::new(config), client_auth })
    }

    /// The client's standing after the handshake. The optional modes verify the chain here,
    /// once; `required` already verified it in the handshake, so this is a cache hit that
    /// gives the verified path.
    pub fn client_cert(&self, presented: &[CertificateDer<'static>]) -> ClientCert {
        let Some((leaf, _)) = presented.split_first() else {
            return ClientCert::None;
        };
        let identity = PeerIdentity::from_der(leaf).ok().map(Arc::new);
        let verdict = match self.client_auth.verifier() {
            Some(chains) => chains.verify(presented, UnixTime::now()),
            None => Err(VerifyError::Empty),
        };
        match (verdict, identity) {
            (Ok(path), Some(identity)) => ClientCert::Verified {
                identity,
                intermediates: path.iter().filter_map(|&i| presented.get(i).cloned()).collect(),
            },
            (Ok(_), None) => ClientCert::Failed {
                reason: VerifyError::Malformed { reason: "unparsable certificate".into() },
                identity: None,
            },
            (Err(reason), identity) => ClientCert::Failed { reason, identity },
        }
    }
}

/// Loads a certificate chain and key for serving, checking that they belong together.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, KeyError> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map(Arc::new).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => KeyError::Mismatch,
        other => KeyError::Unusable(other),
    })
}

/// Why a certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the private key does not belong to the certificate")]
    Mismatch,
    #[error("unusable key")]
    Unusable(#[source] rustls::Error),
}

/// Picks the server certificate for the SNI name.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` certificates, keyed by `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    fn new(certs: Vec<Arc<CertifiedKey>>) -> Result<SniResolver, ListenerTlsError> {
        let default = certs.first().cloned().ok_or(ListenerTlsError::NoCertificate)?;
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for ck in &certs {
            let Some(leaf) = ck.cert.first() else { continue };
            let id = PeerIdentity::from_der(leaf).map_err(ListenerTlsError::Certificate)?;
            for name in id.sans.dns {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(parent) => {
                        wildcard.entry(parent.to_string()).or_insert_with(|| ck.clone())
                    }
                    None => exact.entry(name).or_insert_with(|| ck.clone()),
                };
            }
        }
        Ok(SniResolver { exact, wildcard, default })
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        if let Some(ck) = self.exact.get(&name) {
            return Some(ck.clone());
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(ck) = self.wildcard.get(parent)
        {
            return Some(ck.clone());
        }
        Some(self.default.clone())
    }
}

/// Verifies client certificates with certgate's path validation.
#[derive(Debug)]
struct ClientVerifier {
    chains: Arc<CachingVerifier>,
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !self.mandatory {
            // Optional modes: the chain is verified once after the handshake, so a route can
            // answer 495 with the reason instead of a bare alert.
            return Ok(ClientCertVerified::assertion());
        }
        let mut chain = Vec::with_capacity(1 + intermediates.len());
        chain.push(end_entity.clone());
        chain.extend(intermediates.iter().cloned());
        match self.chains.verify(&chain, now) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(reason) => {
                tracing::info!(reason = %reason, code = reason.code(),
                    "client certificate refused in the handshake");
                Err(rustls::Error::InvalidCertificate(certificate_error(&reason)))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The TLS alert for each refusal (the client sees e.g. "certificate expired").
fn certificate_error(reason: &VerifyError) -> CertificateError {
    match reason {
        VerifyError::Expired { .. } => CertificateError::Expired,
        VerifyError::NotYetValid { .. } => CertificateError::NotValidYet,
        VerifyError::UnknownIssuer { .. } => CertificateError::UnknownIssuer,
        VerifyError::WrongPurpose { .. } | VerifyError::WrongKeyUsage { .. } => {
            CertificateError::InvalidPurpose
        }
        VerifyError::Revoked { .. } => CertificateError::Revoked,
        VerifyError::NameMismatch { .. } | VerifyError::NameConstraints { .. } => {
            CertificateError::NotValidForName
        }
        VerifyError::BadSignature { .. } => CertificateError::BadSignature,
        VerifyError::UnknownRevocationStatus { .. } => CertificateError::UnknownRevocationStatus,
        VerifyError::CrlExpired { .. } => CertificateError::ExpiredRevocationList,
        VerifyError::ChainTooDeep { .. }
        | VerifyError::Malformed { .. }
        | VerifyError::Empty
        | VerifyError::Other(_) => CertificateError::BadEncoding,
    }
}

/// A listener's client-certificate policies by SNI (`[[listener.sni]]`), each with its own
/// `ServerConfig` (so its own trust anchors, CRLs and session state), and the listener's
/// own policy for every other name.
pub struct SniPolicies {
    pub default: Arc<ListenerTls>,
    policies: Vec<Arc<ListenerTls>>,
    exact: std::collections::HashMap<String, usize>,
    /// By the suffix after `*.`: one label only.
    wildcard: std::collections::HashMap<String, usize>,
}

impl SniPolicies {
    /// `by_name`: each policy with its lowercase names (`*.example.com` for one label).
    pub fn new(default: ListenerTls, by_name: Vec<(Vec<String>, ListenerTls)>) -> SniPolicies {
        let mut table = SniPolicies {
            default: Arc::new(default),
            policies: Vec::with_capacity(by_name.len()),
            exact: Default::default(),
            wildcard: Default::default(),
        };
        for (names, tls) in by_name {
            let index = table.policies.len();
            table.policies.push(Arc::new(tls));
            for name in names {
                match name.strip_prefix("*.") {
                    Some(suffix) => table.wildcard.insert(suffix.to_string(), index),
                    None => table.exact.insert(name, index),
                };
            }
        }
        table
    }

    /// Whether any name has a policy of its own.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The policy of `name` (lowercase): its index, or `None` for the listener's own.
    pub fn index(&self, name: Option<&str>) -> Option<usize> {
        let name = name?;
        if let Some(i) = self.exact.get(name) {
            return Some(*i);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).copied()
    }

    /// The TLS settings of the policy `index` gave.
    pub fn tls(&self, index: Option<usize>) -> &Arc<ListenerTls> {
        index.and_then(|i| self.policies.get(i)).unwrap_or(&self.default)
    }

    /// Whether any policy asks for client certificates.
    pub fn asks_for_certs(&self) -> bool {
        std::iter::once(&self.default)
            .chain(&self.policies)
            .any(|t| t.client_auth.verifier().is_some())
    }
}
