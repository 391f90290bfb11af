//! Path validation: the one implementation behind `certgate verify` and the gateway's
//! client-certificate check, so "would the gateway accept this certificate?" has one answer.
//!
//! Chain building, signatures, validity, name constraints, key usage and CRLs are checked by
//! rustls-webpki (the engine rustls itself uses). This module adds what webpki leaves out: a
//! maximum chain depth with OpenSSL's meaning, and a reason for every refusal that names the
//! certificate, the date, the missing usage or the revocation entry.
//!
//! Name constraints: webpki checks the SANs against DNS and IP subtrees and refuses URI,
//! email and directory-name subtrees whenever a name of that form is present (it does not
//! evaluate them: fail closed). It ignores the subject, which OpenSSL does not: a leaf
//! without DNS SANs whose CN looks like a host name has the CN checked against the DNS
//! subtrees, and a subject emailAddress under an email constraint is refused (not evaluated).

use std::cell::Cell;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use ::time::OffsetDateTime;
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, ServerName, TrustAnchor, UnixTime,
};
use webpki::{
    CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage, OwnedCertRevocationList,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::prelude::*;

use crate::validity::format_time;
use crate::{PkiError, dn};

/// The default maximum depth: CA certificates above the leaf, trust anchor included (OpenSSL's
/// and nginx's `verify_depth`). 3 accepts root → intermediate → intermediate → leaf; nginx's
/// default of 1 refuses the common root → intermediate → leaf.
pub const DEFAULT_MAX_DEPTH: u8 = 3;

/// What the certificate must be good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A TLS client: needs the clientAuth extended key usage (when it has any EKU).
    ClientAuth,
    /// A TLS server: needs serverAuth.
    ServerAuth,
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Purpose::ClientAuth => "clientAuth (TLS client)",
            Purpose::ServerAuth => "serverAuth (TLS server)",
        })
    }
}

/// The rules a chain is checked against.
#[derive(Debug, Clone)]
pub struct VerifyPolicy {
    pub purpose: Purpose,
    /// Maximum number of CA certificates above the leaf, trust anchor included.
    pub max_depth: u8,
    /// For a server certificate: the name (DNS or IP) it must be valid for.
    pub name: Option<ServerName<'static>>,
    /// Accept a certificate when no loaded CRL covers its issuer. Off by default: with CRLs
    /// configured, an issuer without one is refused rather than silently unchecked.
    pub allow_unknown_revocation: bool,
    /// Refuse a chain when a CA certificate above the leaf has no loaded CRL from its issuer
    /// (nginx's `ssl_crl` behaviour). Off by default: a revoked intermediate is refused
    /// either way, but loading only the issuing CA's CRL is enough.
    pub full_chain_crls: bool,
    /// How long past their next update the loaded CRLs are still used (measured from the
    /// earliest one). Zero by default: a stale CRL refuses every certificate it covers.
    /// Dangerous: a revocation published meanwhile is not seen.
    pub dangerous_stale_crl_grace: std::time::Duration,
}

impl VerifyPolicy {
    /// A TLS client certificate, default depth, unknown revocation status refused.
    pub fn client() -> Self {
        VerifyPolicy {
            purpose: Purpose::ClientAuth,
            max_depth: DEFAULT_MAX_DEPTH,
            name: None,
            allow_unknown_revocation: false,
            full_chain_crls: false,
            dangerous_stale_crl_grace: std::time::Duration::ZERO,
        }
    }

    /// A TLS server certificate that must be valid for `name`.
    pub fn server(name: ServerName<'static>) -> Self {
        VerifyPolicy { purpose: Purpose::ServerAuth, name: Some(name), ..VerifyPolicy::client() }
    }
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    /// Subjects from the leaf to the trust anchor (RFC 4514).
    pub subjects: Vec<String>,
    /// The verdict holds from this time (the latest notBefore in the path)...
    pub valid_from: UnixTime,
    /// ...until this time: the earliest notAfter in the path, or the earliest nextUpdate of
    /// the loaded CRLs if that comes first. Nothing else in the verdict depends on time.
    pub valid_until: UnixTime,
    /// Positions, in the chain given to [`TrustStore::verify`], of the intermediates of the
    /// verified path, leaf side first. Certificates the client sent that are not on the path
    /// are not listed.
    pub intermediates: Vec<usize>,
}

/// Why a certificate was refused. `Display` is one sentence in plain words.
///
/// Not `#[non_exhaustive]` on purpose: the gateway maps every variant to a TLS alert and an
/// HTTP answer in exhaustive matches, so a new variant does not compile unmapped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VerifyError {
    #[error("certificate {subject} expired on {}", format_time(*not_after))]
    Expired { subject: String, not_after: OffsetDateTime },
    #[error("certificate {subject} is not valid before {}", format_time(*not_before))]
    NotYetValid { subject: String, not_before: OffsetDateTime },
    #[error("{}", unknown_issuer_text(subject, issuer, trusted, *intermediate_missing))]
    UnknownIssuer {
        subject: String,
        issuer: String,
        trusted: Vec<String>,
        intermediate_missing: bool,
    },
    #[error(
        "certificate is not for {required}: its extended key usage is {}",
        list_or_none(present)
    )]
    WrongPurpose { required: Purpose, present: Vec<String> },
    #[error(
        "certificate {subject} with serial {serial} was revoked{}{}",
        revoked_at.map(|t| format!(" on {}", format_time(t))).unwrap_or_default(),
        reason.as_ref().map(|r| format!(" (reason: {r})")).unwrap_or_default()
    )]
    Revoked {
        subject: String,
        serial: String,
        reason: Option<String>,
        revoked_at: Option<OffsetDateTime>,
    },
    #[error(
        "certificate {subject} may not be used for {required}: its key usage is {}, without {}",
        list_or_none(present),
        needed
    )]
    WrongKeyUsage { subject: String, required: Purpose, present: Vec<String>, needed: &'static str },
    #[error("certificate is not valid for {name}; it is valid for {}", list_or_none(valid_for))]
    NameMismatch { name: String, valid_for: Vec<String> },
    #[error("chain too deep: {depth} CA certificates above the leaf, at most {max} allowed")]
    ChainTooDeep { depth: usize, max: u8 },
    #[error("bad signature: {subject} is not signed by the key of its issuer {issuer}")]
    BadSignature { subject: String, issuer: String },
    #[error(
        "certificate {subject} is outside the name constraints of {ca}: {} (permitted: {}; \
         excluded: {})",
        list_or_none(names),
        list_or_none(permitted),
        list_or_none(excluded)
    )]
    NameConstraints {
        subject: String,
        ca: String,
        names: Vec<String>,
        permitted: Vec<String>,
        excluded: Vec<String>,
    },
    #[error("malformed certificate: {reason}")]
    Malformed { reason: String },
    #[error("no CRL from {issuer} is loaded, so the revocation status of {subject} is unknown")]
    UnknownRevocationStatus { subject: String, issuer: String },
    #[error("the CRL is out of date: its next update was due {}", format_time(*next_update))]
    CrlExpired { next_update: OffsetDateTime },
    #[error("no certificate was presented")]
    Empty,
    #[error("certificate refused: {0}")]
    Other(webpki::Error),
}

impl VerifyError {
    /// A short stable code for headers and logs (`FAILED:expired`).
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Expired { .. } => "expired",
            VerifyError::NotYetValid { .. } => "not_yet_valid",
            VerifyError::UnknownIssuer { .. } => "unknown_issuer",
            VerifyError::WrongPurpose { .. } => "wrong_purpose",
            VerifyError::WrongKeyUsage { .. } => "wrong_key_usage",
            VerifyError::Revoked { .. } => "revoked",
            VerifyError::NameMismatch { .. } => "name_mismatch",
            VerifyError::ChainTooDeep { .. } => "chain_too_deep",
            VerifyError::BadSignature { .. } => "bad_signature",
            VerifyError::NameConstraints { .. } => "name_constraints",
            VerifyError::Malformed { .. } => "malformed",
            VerifyError::UnknownRevocationStatus { .. } => "unknown_revocation_status",
            VerifyError::CrlExpired { .. } => "crl_expired",
            VerifyError::Empty => "no_certificate",
            VerifyError::Other(_) => "invalid",
        }
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() { "(none)".into() } else { items.join(", ") }
}

fn unknown_issuer_text(
    subject: &str,
    issuer: &str,
    trusted: &[String],
    intermediate_missing: bool,
) -> String {
    let trusted = if trusted.is_empty() { "none".to_string() } else { trusted.join("; ") };
    if subject == issuer {
        return format!(
            "unknown issuer: {subject} is self-signed and not a trusted CA (trusted: {trusted})"
        );
    }
    let hint = if intermediate_missing {
        " and was not sent with the certificate (is the intermediate missing from the chain?)"
    } else {
        ""
    };
    format!(
        "unknown issuer: {subject} was issued by {issuer}, which is not a trusted CA{hint} (trusted: {trusted})"
    )
}

/// Trust anchors and CRLs, parsed once at load time and shared by every verification.
#[derive(Clone)]
pub struct TrustStore {
    inner: Arc<Inner>,
}

struct Inner {
    anchors: Vec<TrustAnchor<'static>>,
    /// RFC 4514 subject of each anchor, same order as `anchors`.
    anchor_names: Vec<String>,
    /// Full DER subject name of each anchor, same order as `anchors`.
    anchor_subjects: Vec<Vec<u8>>,
    /// The name constraints of each anchor that has them, same order as `anchors`.
    anchor_constraints: Vec<Option<Constraints>>,
    crls: Vec<CertRevocationList<'static>>,
    /// The full DER issuer name of each CRL, same order as `crls`.
    crl_issuers: Vec<Vec<u8>>,
    /// The earliest nextUpdate of the loaded CRLs: a verdict made with them lasts no longer.
    crls_next_update: Option<UnixTime>,
}

impl fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustStore")
            .field("anchors", &self.inner.anchor_names)
            .field("crls", &self.inner.crls.len())
            .finish()
    }
}

impl TrustStore {
    /// Loads trust anchors and CRLs from PEM (or DER) files. Each error names the file.
    pub fn from_pem_files(cas: &[PathBuf], crls: &[PathBuf]) -> Result<TrustStore, PkiError> {
        let mut anchors = Vec::new();
        for path in cas {
            anchors.extend(crate::pem::read_certs(path)?);
        }
        let mut crl_ders = Vec::new();
        for path in crls {
            let loaded = crate::pem::read_crls(path)?;
            for der in &loaded {
                parse_crl(der).map_err(|reason| PkiError::bad_file(path, reason))?;
            }
            crl_ders.extend(loaded);
        }
        Self::from_der(anchors, crl_ders).map_err(|e| match e {
            PkiError::BadFile { reason, .. } => {
                PkiError::BadFile { path: cas.first().cloned().unwrap_or_default(), reason }
            }
            other => other,
        })
    }

    /// Builds a store from DER anchors and CRLs.
    pub fn from_der(
        anchor_certs: Vec<CertificateDer<'static>>,
        crl_ders: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<TrustStore, PkiError> {
        if anchor_certs.is_empty() {
            return Err(PkiError::bad_file("<trust anchors>", "no CA certificate to trust"));
        }
        let mut anchors = Vec::with_capacity(anchor_certs.len());
        let mut anchor_names = Vec::with_capacity(anchor_certs.len());
        let mut anchor_subjects = Vec::with_capacity(anchor_certs.len());
        let mut anchor_constraints = Vec::with_capacity(anchor_certs.len());
        for (i, der) in anchor_certs.iter().enumerate() {
            let bad = |reason: String| {
                PkiError::bad_file("<trust anchors>", format!("certificate #{}: {reason}", i + 1))
            };
            let (_, parsed) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
            anchor_names.push(dn::rfc4514(parsed.subject()));
            anchor_subjects.push(parsed.subject().as_raw().to_vec());
            anchor_constraints.push(Constraints::of(&parsed));
            let anchor =
                webpki::anchor_from_trusted_cert(der).map_err(|e| bad(format!("{e:?}")))?;
            anchors.push(anchor.to_owned());
        }
        let mut crls = Vec::with_capacity(crl_ders.len());
        let mut crl_issuers = Vec::with_capacity(crl_ders.len());
        let mut crls_next_update: Option<UnixTime> = None;
        for der in &crl_ders {
            let (issuer, next_update) =
                parse_crl(der).map_err(|r| PkiError::bad_file("<CRL>", r))?;
            if let Some(next) = next_update {
                crls_next_update = Some(crls_next_update.map_or(next, |t| t.min(next)));
            }
            let owned = OwnedCertRevocationList::from_der(der)
                .map_err(|e| PkiError::bad_file("<CRL>", format!("unusable CRL: {e:?}")))?;
            crls.push(CertRevocationList::from(owned));
            crl_issuers.push(issuer);
        }
        Ok(TrustStore {
            inner: Arc::new(Inner {
                anchors,
                anchor_names,
                anchor_subjects,
                anchor_constraints,
                crls,
                crl_issuers,
                crls_next_update,
            }),
        })
    }

    /// DER subject names of the trust anchors (a full `Name` SEQUENCE each), for the
    /// CertificateRequest's list of acceptable CAs (`rustls::DistinguishedName::from`).
    pub fn anchor_subjects(&self) -> &[Vec<u8>] {
        &self.inner.anchor_subjects
    }

    /// RFC 4514 subjects of the trust anchors, for messages.
    pub fn anchor_names(&self) -> &[String] {
        &self.inner.anchor_names
    }

    /// The earliest nextUpdate of the loaded CRLs: when a fresher CRL should be looked for.
    pub fn crls_next_update(&self) -> Option<UnixTime> {
        self.inner.crls_next_update
    }

    pub fn has_crls(&self) -> bool {
        !self.inner.crls.is_empty()
    }

    /// Verifies `chain` (leaf first, then the intermediates as presented) at time `now`.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        policy: &VerifyPolicy,
        now: UnixTime,
    ) -> Result<VerifiedChain, VerifyError> {
        let (leaf, intermediates) = chain.split_first().ok_or(VerifyError::Empty)?;
        let end_entity = EndEntityCert::try_from(leaf)
            .map_err(|e| VerifyError::Malformed { reason: format!("{e:?}") })?;
        let crl_refs: Vec<&CertRevocationList<'_>> = self.inner.crls.iter().collect();
        // Every certificate in the path is checked against the loaded CRLs, as OpenSSL does:
        // an intermediate revoked by its issuer's CRL is refused. An unknown status (no CRL
        // from that issuer is loaded) is decided by `allow_unknown_revocation` for the leaf;
        // for the CAs above it, only `full_chain_crls` refuses it, so a configuration that
        // loads only the intermediate's CRL keeps working. webpki has one unknown-status
        // policy per check, hence two checks when the leaf and the CAs differ.
        let unknown =
            |allow| if allow { UnknownStatusPolicy::Allow } else { UnknownStatusPolicy::Deny };
        let checks: Vec<(RevocationCheckDepth, UnknownStatusPolicy)> = if crl_refs.is_empty() {
            vec![]
        } else if policy.full_chain_crls || policy.allow_unknown_revocation {
            vec![(RevocationCheckDepth::Chain, unknown(policy.allow_unknown_revocation))]
        } else if intermediates.is_empty() {
            vec![(RevocationCheckDepth::EndEntity, UnknownStatusPolicy::Deny)]
        } else {
            vec![
                (RevocationCheckDepth::EndEntity, UnknownStatusPolicy::Deny),
                (RevocationCheckDepth::Chain, UnknownStatusPolicy::Allow),
            ]
        };
        // Within the grace, stale CRLs are used as they are; past it, they are enforced.
        let grace_until = self
            .inner
            .crls_next_update
            .map(|next| next.as_secs().saturating_add(policy.dangerous_stale_crl_grace.as_secs()));
        let expiration = match grace_until {
            Some(until) if !policy.dangerous_stale_crl_grace.is_zero() && now.as_secs() < until => {
                ExpirationPolicy::Ignore
            }
            _ => ExpirationPolicy::Enforce,
        };
        let mut revocations = Vec::with_capacity(checks.len());
        for (depth, status) in checks {
            let options = RevocationOptionsBuilder::new(&crl_refs)
                .map_err(|e| VerifyError::Malformed { reason: format!("CRL set: {e:?}") })?
                .with_depth(depth)
                .with_status_policy(status)
                .with_expiration_policy(expiration)
                .build();
            revocations.push(Some(options));
        }
        if revocations.is_empty() {
            revocations.push(None);
        }
        let usage = match policy.purpose {
            Purpose::ClientAuth => KeyUsage::client_auth(),
            Purpose::ServerAuth => KeyUsage::server_auth(),
        };
        let deepest = Cell::new(0usize);
        let max_depth = usize::from(policy.max_depth);
        let depth_check = |path: &webpki::VerifiedPath<'_>| {
            let depth = path.intermediate_certificates().count() + 1;
            if depth > max_depth {
                deepest.set(deepest.get().max(depth));
                return Err(webpki::Error::MaximumPathDepthExceeded);
            }
            Ok(())
        };
        let check = |revocation| {
            end_entity
                .verify_for_usage(
                    webpki::ALL_VERIFICATION_ALGS,
                    &self.inner.anchors,
                    intermediates,
                    now,
                    usage,
                    revocation,
                    Some(&depth_check),
                )
                .map_err(|e| self.explain(e, chain, policy, now, deepest.get()))
        };
        let (last, first) = revocations.split_last().ok_or(VerifyError::Empty)?;
        for revocation in first {
            check(*revocation)?;
        }
        let verified = check(*last)?;
        check_key_usage(leaf, policy.purpose)?;
        if let Some(name) = &policy.name {
            end_entity
                .verify_is_valid_for_subject_name(name)
                .map_err(|e| self.explain(e, chain, policy, now, 0))?;
        }
        let mut subjects = Vec::with_capacity(chain.len() + 1);
        let mut valid_from = UnixTime::since_unix_epoch(std::time::Duration::ZERO);
        let mut valid_until = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            grace_until.unwrap_or(u64::MAX),
        ));
        let on_path: Vec<usize> = verified
            .intermediate_certificates()
            .filter_map(|c| intermediates.iter().position(|i| i.as_ref() == c.der().as_ref()))
            .map(|i| i + 1)
            .collect();
        let path: Vec<CertificateDer<'_>> = std::iter::once(leaf.clone())
            .chain(verified.intermediate_certificates().map(|c| c.der()))
            .collect();
        let mut constraints: Vec<Constraints> = Vec::new();
        for (i, der) in path.iter().enumerate() {
            let (_, cert) = X509Certificate::from_der(der)
                .map_err(|e| VerifyError::Malformed { reason: e.to_string() })?;
            if i > 0 {
                constraints.extend(Constraints::of(&cert));
            }
            subjects.push(dn::rfc4514(cert.subject()));
            valid_from = valid_from.max(unix_time(cert.validity().not_before.to_datetime()));
            valid_until = valid_until.min(unix_time(cert.validity().not_after.to_datetime()));
        }
        let anchor = verified.anchor();
        let anchor_index = self.inner.anchors.iter().position(|a| a.subject == anchor.subject);
        let anchor_name =
            anchor_index.and_then(|i| self.inner.anchor_names.get(i).cloned()).unwrap_or_default();
        constraints.extend(
            anchor_index.and_then(|i| self.inner.anchor_constraints.get(i).cloned().flatten()),
        );
        if !constraints.is_empty() {
            check_subject_names(leaf, &constraints)?;
        }
        subjects.push(anchor_name);
        Ok(VerifiedChain { subjects, valid_from, valid_until, intermediates: on_path })
    }

    /// Turns webpki's error into a reason that names the certificate and the fact at fault.
    fn explain(
        &self,
        err: webpki::Error,
        chain: &[CertificateDer<'_>],
        policy: &VerifyPolicy,
        now: UnixTime,
        deepest: usize,
    ) -> VerifyError {
        let parsed: Vec<X509Certificate<'_>> = chain
            .iter()
            .filter_map(|d| X509Certificate::from_der(d).ok().map(|(_, c)| c))
            .collect();
        let Some(leaf) = parsed.first() else {
            return VerifyError::Malformed { reason: "the certificate is not valid X.509".into() };
        };
        let now_dt = to_datetime(now);
        match err {
            webpki::Error::CertExpired { not_after, .. } => {
                let culprit = parsed
                    .iter()
                    .find(|c| c.validity().not_after.to_datetime() < now_dt)
                    .unwrap_or(leaf);
                VerifyError::Expired {
                    subject: dn::rfc4514(culprit.subject()),
                    not_after: to_datetime(not_after),
                }
            }
            webpki::Error::CertNotValidYet { not_before, .. } => {
                let culprit = parsed
                    .iter()
                    .find(|c| c.validity().not_before.to_datetime() > now_dt)
                    .unwrap_or(leaf);
                VerifyError::NotYetValid {
                    subject: dn::rfc4514(culprit.subject()),
                    not_before: to_datetime(not_before),
                }
            }
            webpki::Error::UnknownIssuer => {
                let top = top_of_presented_chain(&parsed);
                let issuer_raw = top.issuer().as_raw();
                let issuer_is_anchor_name =
                    self.inner.anchor_subjects.iter().any(|s| s.as_slice() == issuer_raw);
                if issuer_is_anchor_name {
                    return VerifyError::BadSignature {
                        subject: dn::rfc4514(top.subject()),
                        issuer: dn::rfc4514(top.issuer()),
                    };
                }
                // Only a lone leaf hints at a missing intermediate; when intermediates were
                // sent, the top one's issuer is simply not trusted.
                let lone_leaf = std::ptr::eq(top, leaf);
                VerifyError::UnknownIssuer {
                    subject: dn::rfc4514(top.subject()),
                    issuer: dn::rfc4514(top.issuer()),
                    trusted: self.inner.anchor_names.clone(),
                    intermediate_missing: lone_leaf && top.subject().as_raw() != issuer_raw,
                }
            }
            #[allow(deprecated)]
            webpki::Error::RequiredEkuNotFound | webpki::Error::RequiredEkuNotFoundContext(_) => {
                VerifyError::WrongPurpose {
                    required: policy.purpose,
                    present: crate::identity::eku_names(leaf),
                }
            }
            webpki::Error::CertRevoked => self.revocation_entry(&parsed),
            webpki::Error::UnknownRevocationStatus => {
                // The first certificate whose issuer has no loaded CRL (the leaf, or with
                // full_chain_crls an intermediate).
                let culprit = parsed
                    .iter()
                    .find(|c| {
                        !self.inner.crl_issuers.iter().any(|i| i.as_slice() == c.issuer().as_raw())
                    })
                    .unwrap_or(leaf);
                VerifyError::UnknownRevocationStatus {
                    subject: dn::rfc4514(culprit.subject()),
                    issuer: dn::rfc4514(culprit.issuer()),
                }
            }
            webpki::Error::CrlExpired { next_update, .. } => {
                VerifyError::CrlExpired { next_update: to_datetime(next_update) }
            }
            webpki::Error::MaximumPathDepthExceeded => VerifyError::ChainTooDeep {
                depth: if deepest > 0 { deepest } else { chain.len() },
                max: policy.max_depth,
            },
            #[allow(deprecated)]
            webpki::Error::InvalidSignatureForPublicKey
            | webpki::Error::UnsupportedSignatureAlgorithmForPublicKey
            | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
                let top = top_of_presented_chain(&parsed);
                VerifyError::BadSignature {
                    subject: dn::rfc4514(top.subject()),
                    issuer: dn::rfc4514(top.issuer()),
                }
            }
            webpki::Error::CertNotValidForName(ctx) => VerifyError::NameMismatch {
                name: server_name_text(&ctx.expected),
                valid_for: ctx.presented,
            },
            webpki::Error::NameConstraintViolation => {
                let issuer_raw = top_of_presented_chain(&parsed).issuer().as_raw();
                let constraints = parsed
                    .iter()
                    .skip(1)
                    .find_map(Constraints::of)
                    .or_else(|| {
                        self.inner
                            .anchor_subjects
                            .iter()
                            .zip(&self.inner.anchor_constraints)
                            .find(|(s, c)| s.as_slice() == issuer_raw && c.is_some())
                            .and_then(|(_, c)| c.clone())
                    })
                    .unwrap_or_default();
                VerifyError::NameConstraints {
                    subject: dn::rfc4514(leaf.subject()),
                    ca: constraints.ca,
                    names: crate::identity::Sans::of(leaf).labelled(),
                    permitted: constraints.permitted,
                    excluded: constraints.excluded,
                }
            }
            webpki::Error::CaUsedAsEndEntity => VerifyError::Malformed {
                reason: format!("{} is a CA certificate, not a leaf", dn::rfc4514(leaf.subject())),
            },
            webpki::Error::BadDer | webpki::Error::BadDerTime => VerifyError::Malformed {
                reason: "the certificate's DER encoding is invalid".into(),
            },
            other => VerifyError::Other(other),
        }
    }

    /// Finds the CRL entry that revoked a certificate of the chain, for its date and reason.
    fn revocation_entry(&self, parsed: &[X509Certificate<'_>]) -> VerifyError {
        for cert in parsed {
            let issuer = cert.issuer().as_raw();
            for (crl, crl_issuer) in self.inner.crls.iter().zip(&self.inner.crl_issuers) {
                if crl_issuer.as_slice() != issuer {
                    continue;
                }
                if let Ok(Some(entry)) = crl.find_serial(cert.raw_serial()) {
                    return VerifyError::Revoked {
                        subject: dn::rfc4514(cert.subject()),
                        serial: crate::identity::hex(cert.raw_serial()),
                        reason: entry.reason_code.map(reason_name),
                        revoked_at: Some(to_datetime(entry.revocation_date)),
                    };
                }
            }
        }
        let (subject, serial) = parsed
            .first()
            .map(|c| (dn::rfc4514(c.subject()), crate::identity::hex(c.raw_serial())))
            .unwrap_or_default();
        VerifyError::Revoked { subject, serial, reason: None, revoked_at: None }
    }
}

/// The name constraints of one CA certificate, as text for messages plus what the subject
/// checks need.
#[derive(Debug, Clone, Default)]
struct Constraints {
    /// The CA's subject (RFC 4514).
    ca: String,
    permitted: Vec<String>,
    excluded: Vec<String>,
    permitted_dns: Vec<String>,
    excluded_dns: Vec<String>,
    /// Whether any subtree is an email (rfc822Name) one.
    email: bool,
}

impl Constraints {
    /// `None` when the certificate has no (readable) nameConstraints extension.
    fn of(cert: &X509Certificate<'_>) -> Option<Constraints> {
        let ext = cert.name_constraints().ok()??;
        let mut c = Constraints { ca: dn::rfc4514(cert.subject()), ..Constraints::default() };
        let trees = [(&ext.value.permitted_subtrees, true), (&ext.value.excluded_subtrees, false)];
        for (subtrees, permitted) in trees {
            for subtree in subtrees.iter().flatten() {
                let text = match &subtree.base {
                    GeneralName::DNSName(d) => {
                        let list =
                            if permitted { &mut c.permitted_dns } else { &mut c.excluded_dns };
                        list.push(d.to_ascii_lowercase());
                        format!("DNS:{d}")
                    }
                    GeneralName::IPAddress(b) => format!("IP:{}", ip_block(b)),
                    GeneralName::RFC822Name(e) => {
                        c.email = true;
                        format!("email:{e}")
                    }
                    GeneralName::URI(u) => format!("URI:{u}"),
                    other => other.to_string(),
                };
                if permitted { c.permitted.push(text) } else { c.excluded.push(text) }
            }
        }
        Some(c)
    }
}

/// An IP subtree (address then mask, 8 or 32 bytes) as `10.0.0.0/8`.
fn ip_block(bytes: &[u8]) -> String {
    let (addr, mask) = bytes.split_at(bytes.len() / 2);
    match crate::identity::ip_from_bytes(addr) {
        Some(ip) => {
            let prefix: u32 = mask.iter().map(|b| b.count_ones()).sum();
            format!("{ip}/{prefix}")
        }
        None => format!("{bytes:02x?}"),
    }
}

/// What webpki leaves out of name constraints and OpenSSL checks: a leaf without DNS SANs has
/// a CN that looks like a host name checked against the DNS subtrees; and a subject
/// emailAddress under email subtrees is refused, since certgate does not evaluate those.
fn check_subject_names(
    leaf: &CertificateDer<'_>,
    constraints: &[Constraints],
) -> Result<(), VerifyError> {
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|e| VerifyError::Malformed { reason: e.to_string() })?;
    let has_dns_san = cert.subject_alternative_name().ok().flatten().is_some_and(|san| {
        san.value.general_names.iter().any(|n| matches!(n, GeneralName::DNSName(_)))
    });
    let refuse = |c: &Constraints, name: String| VerifyError::NameConstraints {
        subject: dn::rfc4514(cert.subject()),
        ca: c.ca.clone(),
        names: vec![name],
        permitted: c.permitted.clone(),
        excluded: c.excluded.clone(),
    };
    for c in constraints {
        if !has_dns_san {
            for cn in dn::attribute_values(cert.subject(), dn::OID_CN) {
                if !looks_like_host_name(&cn) {
                    continue;
                }
                let host = cn.to_ascii_lowercase();
                let permitted = c.permitted_dns.is_empty()
                    || c.permitted_dns.iter().any(|base| dns_in_subtree(&host, base));
                let excluded = c.excluded_dns.iter().any(|base| dns_in_subtree(&host, base));
                if !permitted || excluded {
                    return Err(refuse(c, format!("CN={cn} (a host name, no DNS SAN)")));
                }
            }
        }
        let email = dn::attribute_values(cert.subject(), OID_EMAIL).into_iter().next();
        if let Some(email) = email.filter(|_| c.email) {
            return Err(refuse(
                c,
                format!("emailAddress={email} (email constraints are not evaluated)"),
            ));
        }
    }
    Ok(())
}

const OID_EMAIL: &str = "1.2.840.113549.1.9.1";

/// OpenSSL's test for a CN that names a host: at least two labels of letters, digits, `-`
/// and `_`, none empty.
fn looks_like_host_name(cn: &str) -> bool {
    cn.contains('.')
        && cn.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// RFC 5280 DNS subtree matching: `example.com` covers itself and every name below it; a
/// leading dot (`.example.com`) only the names below; an empty base everything.
fn dns_in_subtree(host: &str, base: &str) -> bool {
    let base = base.to_ascii_lowercase();
    if base.is_empty() {
        return true;
    }
    if base.starts_with('.') {
        return host.ends_with(&base);
    }
    host == base || host.ends_with(&format!(".{base}"))
}

/// Refuses a leaf whose keyUsage extension leaves out what the purpose needs, as OpenSSL's
/// `-purpose sslclient`/`sslserver` checks do: a TLS client signs (digitalSignature); a TLS
/// server signs or, for RSA key exchange, enciphers (keyEncipherment). A leaf without the
/// extension may be used for anything.
fn check_key_usage(leaf: &CertificateDer<'_>, purpose: Purpose) -> Result<(), VerifyError> {
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|e| VerifyError::Malformed { reason: e.to_string() })?;
    let Ok(Some(ku)) = cert.key_usage() else { return Ok(()) };
    let ku = ku.value;
    let (ok, needed) = match purpose {
        Purpose::ClientAuth => (ku.digital_signature(), "digitalSignature"),
        Purpose::ServerAuth => {
            (ku.digital_signature() || ku.key_encipherment(), "digitalSignature or keyEncipherment")
        }
    };
    if ok {
        return Ok(());
    }
    Err(VerifyError::WrongKeyUsage {
        subject: dn::rfc4514(cert.subject()),
        required: purpose,
        present: key_usage_names(ku),
        needed,
    })
}

/// The key usages a keyUsage extension allows, by their RFC 5280 names.
pub fn key_usage_names(ku: &x509_parser::extensions::KeyUsage) -> Vec<String> {
    [
        (ku.digital_signature(), "digitalSignature"),
        (ku.non_repudiation(), "nonRepudiation"),
        (ku.key_encipherment(), "keyEncipherment"),
        (ku.data_encipherment(), "dataEncipherment"),
        (ku.key_agreement(), "keyAgreement"),
        (ku.key_cert_sign(), "keyCertSign"),
        (ku.crl_sign(), "cRLSign"),
        (ku.encipher_only(), "encipherOnly"),
        (ku.decipher_only(), "decipherOnly"),
    ]
    .into_iter()
    .filter(|(present, _)| *present)
    .map(|(_, name)| name.to_string())
    .collect()
}

/// Follows issuer links through the presented certificates and returns the last one: the
/// certificate whose issuer could not be found among those presented.
fn top_of_presented_chain<'a>(parsed: &'a [X509Certificate<'a>]) -> &'a X509Certificate<'a> {
    let mut current = &parsed[0];
    for _ in 0..parsed.len() {
        let next = parsed.iter().find(|c| {
            c.subject().as_raw() == current.issuer().as_raw()
                && c.subject().as_raw() != current.subject().as_raw()
        });
        match next {
            Some(n) => current = n,
            None => break,
        }
    }
    current
}

/// The revocation reason as RFC 5280 spells it (`keyCompromise`).
pub fn reason_name(reason: webpki::RevocationReason) -> String {
    crate::crl::reason_code_name(reason as u8).to_string()
}

fn server_name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => format!("{name:?}"),
    }
}

/// A CRL's nextUpdate, if it parses and has one.
pub fn crl_next_update(der: &[u8]) -> Option<UnixTime> {
    parse_crl(der).ok().and_then(|(_, next)| next)
}

/// A DER CRL's thisUpdate, `None` when it does not parse.
pub fn crl_this_update(der: &[u8]) -> Option<UnixTime> {
    let (_, crl) = CertificateRevocationList::from_der(der).ok()?;
    Some(unix_time(crl.last_update().to_datetime()))
}

/// Parses a CRL enough to index it; returns the full DER of its issuer name and its
/// nextUpdate.
fn parse_crl(der: &[u8]) -> Result<(Vec<u8>, Option<UnixTime>), String> {
    let (_, crl) =
        CertificateRevocationList::from_der(der).map_err(|e| format!("not a valid CRL: {e}"))?;
    let next_update = crl.next_update().map(|t| unix_time(t.to_datetime()));
    Ok((crl.issuer().as_raw().to_vec(), next_update))
}

fn to_datetime(t: UnixTime) -> OffsetDateTime {
    let secs = i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `UnixTime` for an `OffsetDateTime` (times before 1970 become 1970).
pub fn unix_time(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(t.unix_timestamp()).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;
    use crate::testkit::{LeafSpec, TestPki};
    use ::time::Duration;

    fn now() -> UnixTime {
        UnixTime::now()
    }

    fn store(pki: &TestPki) -> TrustStore {
        TrustStore::from_der(vec![pki.root_der()], vec![]).unwrap()
    }

    /// A valid client chain verifies and reports leaf → intermediate → root.
    #[test]
    fn valid_client_chain_verifies() {
        let pki = TestPki::new();
        let leaf = pki.client("joe", &["spiffe://example.test/joe"]);
        let chain = store(&pki).verify(&leaf.chain_der(), &VerifyPolicy::client(), now()).unwrap();
        assert_eq!(chain.subjects.len(), 3);
        assert_eq!(chain.subjects[0], "CN=joe");
        assert_eq!(chain.subjects[2], "CN=certgate test root CA,O=certgate tests");
    }

    /// An expired leaf is refused with its expiry date.
    #[test]
    fn expired_is_refused_with_date() {
        let pki = TestPki::new();
        let t0 = OffsetDateTime::now_utc() - Duration::days(10);
        let leaf = pki.leaf(LeafSpec {
            cn: "old".into(),
            not_before: Some(t0),
            not_after: Some(t0 + Duration::days(1)),
            ..LeafSpec::client()
        });
        let err =
            store(&pki).verify(&leaf.chain_der(), &VerifyPolicy::client(), now()).unwrap_err();
        assert!(matches!(err, VerifyError::Expired { .. }), "{err:?}");
        let expected =
            format!("certificate CN=old expired on {}", format_time(t0 + Duration::days(1)));
        assert_eq!(err.to_string(), expected);
        assert_eq!(err.code(), "expired");
    }

    /// A certificate from another CA names its issuer and the trusted CAs.
    #[test]
    fn unknown_issuer_names_expected_issuer() {
        let pki = TestPki::new();
        let other = TestPki::named("other");
        let leaf = other.client("mallory", &[]);
        let err =
            store(&pki).verify(&leaf.chain_der(), &VerifyPolicy::client(), now()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("CN=other root CA"), "{msg}");
        assert!(msg.contains("trusted: CN=certgate test root CA"), "{msg}");
    }

    /// Leaving out the intermediate is reported as such.
    #[test]
    fn missing_intermediate_is_hinted() {
        let pki = TestPki::new();
        let leaf = pki.client("joe", &[]);
        let err = store(&pki)
            .verify(std::slice::from_ref(&leaf.der), &VerifyPolicy::client(), now())
            .unwrap_err();
        assert!(err.to_string().contains("intermediate missing"), "{err}");
    }

    /// A server certificate presented as a client certificate lacks clientAuth.
    #[test]
    fn wrong_purpose_names_missing_eku() {
        let pki = TestPki::new();
        let leaf = pki.server(&["api.example.test"]);
        let err =
            store(&pki).verify(&leaf.chain_der(), &VerifyPolicy::client(), now()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "certificate is not for clientAuth (TLS client): its extended key usage is serverAuth"
        );
    }

    /// A revoked leaf is refused with the CRL's reason and date.
    #[test]
    fn revoked_reports_reason_and_date() {
        let pki = TestPki::new();
        let leaf = pki.client("joe", &[]);
        let good = pki.client("ann", &[]);
        let crl = pki.crl_der(&[&leaf]);
        let store = TrustStore::from_der(vec![pki.root_der()], vec![crl]).unwrap();
        let err = store.verify(&leaf.chain_der(), &VerifyPolicy::client(), now()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(&format!(
            "certificate CN=joe with serial {} was revoked on ",
            leaf.serial_hex
        )));
        assert!(msg.ends_with("(reason: keyCompromise)"), "{msg}");
        store.verify(&good.chain_der(), &VerifyPolicy::client(), now()).unwrap();
    }

    /// With CRLs loaded, a certificate whose issuer has no CRL is refused unless allowed.
    #[test]
    fn unknown_revocation_status_is_refused_by_default() {
        let pki = TestPki::new();
        let other = TestPki::named("other");
        let crl = other.crl_der(&[]);
        let store = TrustStore::from_der(vec![pki.root_der()], vec![crl]).unwrap();
        let leaf = pki.client("joe", &[]);
        let err = store.verify(&leaf.chain_der(), &VerifyPolicy::client(), now()).unwrap_err();
        assert_eq!(err.code(), "unknown_revocation_status", "{err}");
        let lenient = VerifyPolicy { allow_unknown_revocation: true, ..VerifyPolicy::client() };
        store.verify(&leaf.chain_der(), &lenient, now()).unwrap();
    }

    /// Two intermediates pass at the default depth and are refused at depth 2.
    #[test]
    fn chain_depth_is_enforced() {
        let pki = TestPki::with_two_intermediates();
        let leaf = pki.client("deep", &[]);
        let store = store(&pki);
        let chain = store.verify(&leaf.chain_der(), &VerifyPolicy::client(), now()).unwrap();
        assert_eq!(chain.subjects.len(), 4);
        let shallow = VerifyPolicy { max_depth: 2, ..VerifyPolicy::client() };
        let err = store.verify(&leaf.chain_der(), &shallow, now()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "chain too deep: 3 CA certificates above the leaf, at most 2 allowed"
        );
    }

    /// A server certificate checked for another host names both.
    #[test]
    fn name_mismatch_lists_valid_names() {
        let pki = TestPki::new();
        let leaf = pki.server(&["api.example.test", "127.0.0.1"]);
        let policy = VerifyPolicy::server(ServerName::try_from("www.example.test").unwrap());
        let err = store(&pki).verify(&leaf.chain_der(), &policy, now()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("not valid for www.example.test"), "{msg}");
        assert!(msg.contains("api.example.test"), "{msg}");
        let ok = VerifyPolicy::server(ServerName::try_from("api.example.test").unwrap());
        store(&pki).verify(&leaf.chain_der(), &ok, now()).unwrap();
    }

    fn crl_der(pem: &str) -> CertificateRevocationListDer<'static> {
        crate::pem::decode_block_any(pem.as_bytes(), "X509 CRL").unwrap().into()
    }

    /// An intermediate revoked by its issuer's CRL is refused, naming it, whatever CRLs the
    /// leaf's own issuer has.
    #[test]
    fn revoked_intermediate_is_refused() {
        let pki = TestPki::new();
        let leaf = pki.client("joe", &[]);
        let crls = vec![crl_der(&pki.root_crl(true)), pki.crl_der(&[])];
        let store = TrustStore::from_der(vec![pki.root_der()], crls).unwrap();
        let err = store.verify(&leaf.chain_der(), &VerifyPolicy::client(), now()).unwrap_err();
        assert_eq!(err.code(), "revoked", "{err}");
        assert!(err.to_string().contains("CN=certgate test intermediate CA"), "{err}");
        assert!(err.to_string().contains("cACompromise"), "{err}");
        // Only the root's CRL loaded: still refused (the leaf's status is then unknown, but the
        // intermediate's revocation is found first or the leaf's unknown status refuses it).
        let store =
            TrustStore::from_der(vec![pki.root_der()], vec![crl_der(&pki.root_crl(true))]).unwrap();
        assert!(store.verify(&leaf.chain_der(), &VerifyPolicy::client(), now()).is_err());
        let lenient = VerifyPolicy { allow_unknown_revocation: true, ..VerifyPolicy::client() };
        let err = store.verify(&leaf.chain_der(), &lenient, now()).unwrap_err();
        assert_eq!(err.code(), "revoked", "{err}");
    }

    /// Loading only the issuing CA's CRL keeps working; full_chain_crls then asks for the
    /// root's CRL too, and accepts once it is loaded.
    #[test]
    fn intermediate_crl_alone_suffices_unless_full_chain_is_asked() {
        let pki = TestPki::new();
        let leaf = pki.client("joe", &[]);
        let store = TrustStore::from_der(vec![pki.root_der()], vec![pki.crl_der(&[])]).unwrap();
        let chain = store.verify(&leaf.chain_der(), &VerifyPolicy::client(), now()).unwrap();
        assert_eq!(chain.intermediates, vec![1]);
        let full = VerifyPolicy { full_chain_crls: true, ..VerifyPolicy::client() };
        let err = store.verify(&leaf.chain_der(), &full, now()).unwrap_err();
        assert_eq!(err.code(), "unknown_revocation_status", "{err}");
        assert!(err.to_string().contains("revocation status of CN=certgate test intermediate CA"));
        let both = TrustStore::from_der(
            vec![pki.root_der()],
            vec![pki.crl_der(&[]), crl_der(&pki.root_crl(false))],
        )
        .unwrap();
        both.verify(&leaf.chain_der(), &full, now()).unwrap();
    }

    /// A stale CRL refuses by default; `dangerous_stale_crl_grace` keeps using it (revoked
    /// certificates still refused) until the grace runs out, and the verdict lasts no longer.
    #[test]
    fn stale_crl_grace_is_bounded() {
        let pki = TestPki::new();
        let (joe, eve) = (pki.client("joe", &[]), pki.client("eve", &[]));
        let ago = |minutes: i64| OffsetDateTime::now_utc() - ::time::Duration::minutes(minutes);
        let stale = |minutes| {
            TrustStore::from_der(
                vec![pki.root_der()],
                vec![crl_der(&pki.crl_until(&[&eve], ago(minutes)))],
            )
            .unwrap()
        };
        let hour = VerifyPolicy {
            dangerous_stale_crl_grace: std::time::Duration::from_secs(3600),
            ..VerifyPolicy::client()
        };
        let err = stale(10).verify(&joe.chain_der(), &VerifyPolicy::client(), now()).unwrap_err();
        assert_eq!(err.code(), "crl_expired", "{err}");
        let within = stale(10).verify(&joe.chain_der(), &hour, now()).unwrap();
        let until = within.valid_until.as_secs();
        let expected = (ago(10) + ::time::Duration::hours(1)).unix_timestamp() as u64;
        assert!(until.abs_diff(expected) <= 2, "{until} vs {expected}");
        assert_eq!(stale(10).verify(&eve.chain_der(), &hour, now()).unwrap_err().code(), "revoked");
        let past = stale(61).verify(&joe.chain_der(), &hour, now()).unwrap_err();
        assert_eq!(past.code(), "crl_expired", "{past}");
    }

    /// A client leaf whose keyUsage lacks digitalSignature is refused, naming what it has.
    #[test]
    fn client_leaf_without_digital_signature_is_refused() {
        let pki = TestPki::new();
        let leaf = pki.leaf(LeafSpec {
            cn: "enc-only".into(),
            key_usages: Some(vec![rcgen::KeyUsagePurpose::KeyEncipherment]),
            ..LeafSpec::client()
        });
        let err =
            store(&pki).verify(&leaf.chain_der(), &VerifyPolicy::client(), now()).unwrap_err();
        assert_eq!(err.code(), "wrong_key_usage", "{err}");
        assert_eq!(
            err.to_string(),
            "certificate CN=enc-only may not be used for clientAuth (TLS client): its key usage \
             is keyEncipherment, without digitalSignature"
        );
    }

    /// Extra certificates the client sends are not part of the verified path.
    #[test]
    fn verified_path_leaves_out_extra_certificates() {
        let pki = TestPki::new();
        let stranger = TestPki::named("stranger");
        let leaf = pki.client("joe", &[]);
        let mut chain = leaf.chain_der();
        chain.insert(1, stranger.root_der());
        let verified = store(&pki).verify(&chain, &VerifyPolicy::client(), now()).unwrap();
        assert_eq!(verified.intermediates, vec![2]);
    }

    /// A certificate signed by a different key under the trusted CA's name is a bad signature.
    #[test]
    fn forged_issuer_is_bad_signature() {
        let pki = TestPki::new();
        let impostor = TestPki::named("certgate test");
        let leaf = impostor.leaf(LeafSpec { profile: Profile::Client, ..LeafSpec::client() });
        let err =
            store(&pki).verify(&leaf.chain_der(), &VerifyPolicy::client(), now()).unwrap_err();
        assert_eq!(err.code(), "bad_signature", "{err}");
    }
}
