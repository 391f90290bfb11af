//! The CA thread: one dedicated thread owns the [`Authority`] (its signing key loaded once, the
//! inventory) and serves jobs from a bounded queue, each answered on its own oneshot channel.
//! One writer serialises serials, CRL numbers and inventory transactions; the async runtime
//! never blocks on SQLite or a signature. A full queue is refused at once
//! ([`CaError::Busy`]), never waited on.
//!
//! Every job commits its inventory transaction before its answer is sent: an answer lost on
//! the way leaves a recorded (and revocable) certificate, never an unrecorded one.

use std::collections::HashMap;

use certgate_pki::PkiError;
use certgate_pki::ca::{Authority, Redeemed};
use certgate_pki::crl::CrlIssuer;
use certgate_pki::names::San;
use certgate_pki::provisioner::Provisioners;
use certgate_pki::validity::Validity;
use certgate_token::ott;
use time::{Duration, OffsetDateTime};
use tokio::sync::{mpsc, oneshot};

use certgate_pki::store::{Serial, Status};

use super::{CaError, SignRequest, Signed};

/// How long a CRL the service signs is valid (its nextUpdate).
pub const CRL_LIFETIME: Duration = Duration::hours(24);

/// A CRL whose nextUpdate is closer than this is signed again before it is served, so relying
/// parties that cache it until nextUpdate never hold an expired one.
pub const CRL_REFRESH_BEFORE: Duration = Duration::hours(8);

/// One piece of work for the CA thread.
pub enum Job {
    /// The DER CRL of `issuer`.
    Crl { issuer: CrlIssuer, reply: oneshot::Sender<Result<Vec<u8>, CaError>> },
    /// `POST /sign`: a CSR with a one-time token.
    Sign { request: SignRequest, reply: oneshot::Sender<Result<Signed, CaError>> },
    /// `POST /renew`: the certificate presented on the connection.
    Renew { presented: Presented, reply: oneshot::Sender<Result<Signed, CaError>> },
    /// `POST /rekey`: the certificate presented on the connection, for the key of `csr` (PEM).
    Rekey { presented: Presented, csr: String, reply: oneshot::Sender<Result<Signed, CaError>> },
}

/// The client certificate of a connection, as the handshake left it.
#[derive(Debug, Clone)]
pub struct Presented {
    pub der: Vec<u8>,
    /// Why verification refused it (it still proved possession of its key); `None`: verified.
    pub failure: Option<certgate_pki::verify::VerifyError>,
}

/// What the CA thread owns: the CA, its provisioners with their public keys, and what a
/// token's `aud` may be.
pub struct CaState {
    pub ca: Authority,
    pub provisioners: Provisioners,
    /// Each provisioner's public key (PEM), by name.
    pub keys: HashMap<String, Vec<u8>>,
    /// The root's SHA-256 fingerprint, lowercase hex: one audience a token may name.
    pub fingerprint: String,
    /// The names the service is reached at: `https://NAME[:port]/sign` is an audience too.
    pub names: Vec<String>,
}

impl CaState {
    /// Loads the provisioners of `ca`'s directory and their public keys.
    pub fn new(ca: Authority, names: Vec<String>) -> Result<CaState, PkiError> {
        let provisioners = Provisioners::load(&ca.paths().dir)?;
        let mut keys = HashMap::new();
        for p in &provisioners.list {
            let key = certgate_pki::keys::load(&p.key, None)?;
            keys.insert(p.name.clone(), key.public_key_pem().into_bytes());
        }
        let fingerprint = ca.root_fingerprint();
        Ok(CaState { ca, provisioners, keys, fingerprint, names })
    }

    /// Whether a token's `aud` names this CA: its root fingerprint (with or without a
    /// `sha256:` prefix, any case), or `https://NAME[:PORT]/sign` for one of its names.
    fn audience_ok(&self, aud: &str) -> bool {
        let fp = aud.strip_prefix("sha256:").unwrap_or(aud).replace(':', "");
        if fp.eq_ignore_ascii_case(&self.fingerprint) {
            return true;
        }
        let Some(rest) = aud.strip_prefix("https://") else { return false };
        let Some(authority) = rest.strip_suffix("/sign") else { return false };
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }
}

/// The sending side of the CA thread's queue.
#[derive(Clone)]
pub struct CaHandle {
    jobs: mpsc::Sender<Job>,
}

impl CaHandle {
    /// Starts the CA thread with `state` and a queue of `capacity` jobs (at least 1).
    pub fn start(state: CaState, capacity: usize) -> Result<CaHandle, CaError> {
        let (jobs, rx) = mpsc::channel(capacity.max(1));
        std::thread::Builder::new()
            .name("certgate-ca".into())
            .spawn(move || run(state, rx))
            .map_err(|source| CaError::Thread { source })?;
        Ok(CaHandle { jobs })
    }

    /// Whether the CA thread still takes jobs.
    pub fn alive(&self) -> bool {
        !self.jobs.is_closed()
    }

    /// Queues a job made by `job` around its reply channel and waits for the answer.
    /// A full queue is [`CaError::Busy`] at once.
    pub async fn ask<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, CaError>>) -> Job,
    ) -> Result<T, CaError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.try_send(job(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => CaError::Busy,
            mpsc::error::TrySendError::Closed(_) => CaError::Stopped,
        })?;
        answer.await.map_err(|_| CaError::Stopped)?
    }
}

/// The CA thread's loop: one job at a time until every sender is gone.
fn run(mut state: CaState, mut jobs: mpsc::Receiver<Job>) {
    while let Some(job) = jobs.blocking_recv() {
        // The requester may have gone away (timeout, closed connection): the work is done
        // (and committed) anyway and the answer dropped.
        match job {
            Job::Crl { issuer, reply } => {
                let _ = reply.send(crl(&mut state.ca, issuer));
            }
            Job::Sign { request, reply } => {
                let outcome = sign(&mut state, &request);
                if let Ok(signed) = &outcome {
                    tracing::info!(serial = %signed.serial, name = %signed.name, "signed a CSR \
                        with a one-time token");
                }
                let _ = reply.send(outcome);
            }
            Job::Renew { presented, reply } => {
                let outcome = renew(&mut state, &presented);
                if let Ok(signed) = &outcome {
                    tracing::info!(serial = %signed.serial, name = %signed.name, "renewed a \
                        certificate over mTLS");
                }
                let _ = reply.send(outcome);
            }
            Job::Rekey { presented, csr, reply } => {
                let outcome = rekey(&mut state, &presented, &csr);
                if let Ok(signed) = &outcome {
                    tracing::info!(serial = %signed.serial, name = %signed.name, "rekeyed a \
                        certificate over mTLS");
                }
                let _ = reply.send(outcome);
            }
        }
    }
}

/// `POST /sign`, step by step: the token (signature by a provisioner key, audience, time),
/// the CSR (its signature), the names (the CSR's CN and SANs within the token's `sub` and
/// `sans`, and within the provisioner's profile), the lifetime (within the profile's
/// bounds), then issuance, recording the token's `jti` in the same transaction.
fn sign(state: &mut CaState, req: &SignRequest) -> Result<Signed, CaError> {
    let now = OffsetDateTime::now_utc();
    let unix_now = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    // 1. The token.
    let claims = ott::verify(
        &req.ott,
        |iss| state.keys.get(iss).cloned(),
        |aud| state.audience_ok(aud),
        unix_now,
    )
    .map_err(CaError::Token)?;
    let provisioner = state
        .provisioners
        .find(&claims.iss)
        .ok_or_else(|| CaError::Token(ott::OttError::UnknownProvisioner(claims.iss.clone())))?
        .clone();
    // 2. The CSR.
    let csr = certgate_pki::csr::parse(req.csr.as_bytes(), "the CSR").map_err(CaError::BadCsr)?;
    // 3. The names.
    let mut allowed: Vec<String> = vec![claims.sub.to_ascii_lowercase()];
    allowed.extend(claims.sans.iter().map(|s| s.to_ascii_lowercase()));
    let token_names = || format!("sub {:?}, sans [{}]", claims.sub, claims.sans.join(", "));
    if let Some(cn) = csr.subject.common_name()
        && !allowed.contains(&cn.to_ascii_lowercase())
    {
        return Err(CaError::NameNotAllowed {
            reason: format!("the CSR's CN {cn:?} is not in the token ({})", token_names()),
        });
    }
    let sans: Vec<San> = if csr.sans.is_empty() {
        let listed =
            if claims.sans.is_empty() { vec![claims.sub.clone()] } else { claims.sans.clone() };
        listed.iter().map(|s| San::parse(s)).collect::<Result<_, _>>().map_err(CaError::BadCsr)?
    } else {
        csr.sans.clone()
    };
    for san in &sans {
        if !allowed.contains(&san.value().to_ascii_lowercase()) {
            return Err(CaError::NameNotAllowed {
                reason: format!(
                    "the CSR asks for {san}, which the token does not name ({})",
                    token_names()
                ),
            });
        }
        if !provisioner.allows(san) {
            return Err(CaError::NameNotAllowed {
                reason: format!("provisioner {:?} does not allow {san}", provisioner.name),
            });
        }
    }
    // 4. The lifetime.
    let parse =
        |field: &'static str, value: &Option<String>| -> Result<Option<OffsetDateTime>, CaError> {
            value
                .as_deref()
                .map(|v| {
                    OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                        .map_err(|_| CaError::BadRequest {
                            reason: format!("{field} is not an RFC 3339 time: {v:?}"),
                        })
                })
                .transpose()
        };
    if parse("notBefore", &req.not_before)?.is_some_and(|nb| nb > now + Duration::minutes(1)) {
        return Err(CaError::BadRequest {
            reason: "notBefore in the future is not supported: certificates start now".into(),
        });
    }
    let lifetime = match parse("notAfter", &req.not_after)? {
        Some(na) => na - now,
        None => provisioner.default_lifetime,
    };
    // To the nearest minute: a request for "1 minute from now" arrives a moment later.
    let minutes = (lifetime + Duration::seconds(30)).whole_minutes();
    let rounded = Duration::minutes(minutes);
    if rounded < provisioner.min_lifetime || rounded > provisioner.max_lifetime {
        return Err(CaError::BadRequest {
            reason: format!(
                "a lifetime of {minutes} minutes is outside what provisioner {:?} allows ({} to {} minutes)",
                provisioner.name,
                provisioner.min_lifetime.whole_minutes(),
                provisioner.max_lifetime.whole_minutes()
            ),
        });
    }
    let validity = Validity::Minutes(u32::try_from(minutes).unwrap_or(u32::MAX));
    // 5. Issue, taking the token's jti in the same transaction; answered once committed.
    let token = Redeemed {
        jti: claims.jti.clone(),
        provisioner: claims.iss.clone(),
        expires_at: OffsetDateTime::from_unix_timestamp(
            i64::try_from(claims.exp).unwrap_or(i64::MAX),
        )
        .unwrap_or(now + Duration::days(1)),
    };
    let issued = state
        .ca
        .sign_redeeming(&csr, &claims.sub, &sans, provisioner.profile, validity, &token, |_| {
            super::fault::pause(super::fault::Point::BeforeCommit);
            Ok(())
        })
        .map_err(CaError::from_issuance)?;
    super::fault::pause(super::fault::Point::AfterCommit);
    Ok(signed(state, &issued))
}

/// `POST /renew`: the certificate of this connection, if [`renewable`], is renewed (same key,
/// subject, SANs and profile, as long a lifetime from now). The old certificate is
/// superseded in the transaction that records the new one, where its status is checked again.
fn renew(state: &mut CaState, presented: &Presented) -> Result<Signed, CaError> {
    let serial = renewable(state, presented)?;
    let (issued, _) = state.ca.renew_serial(&serial).map_err(renewal_error)?;
    Ok(signed(state, &issued))
}

/// `POST /rekey`: the certificate of this connection, if [`renewable`], is renewed for the key
/// of `csr` (PEM; its signature must verify and its key must be another than the old one's):
/// the old certificate's subject, SANs, profile and lifetime length, never the CSR's. The
/// certificate is checked first (401), then the CSR (400).
fn rekey(state: &mut CaState, presented: &Presented, csr: &str) -> Result<Signed, CaError> {
    let serial = renewable(state, presented)?;
    if !csr.trim_start().starts_with("-----BEGIN") {
        return Err(CaError::BadRequest {
            reason: "csr: not a PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----)"
                .into(),
        });
    }
    let csr = certgate_pki::csr::parse(csr.as_bytes(), "the CSR").map_err(CaError::BadCsr)?;
    let (issued, _) = state.ca.rekey_serial(&serial, &csr).map_err(renewal_error)?;
    Ok(signed(state, &issued))
}

/// A renewal refused inside the transaction (revoked or renewed meanwhile) is 401 like the
/// checks before it; other failures are mapped as for issuance.
fn renewal_error(e: PkiError) -> CaError {
    if matches!(e, PkiError::RenewRevoked { .. } | PkiError::RenewSuperseded { .. }) {
        return CaError::RenewRefused { reason: e.to_string() };
    }
    CaError::from_issuance(e)
}

/// The serial of the certificate of this connection, when it may be renewed or rekeyed: it
/// is pinned to its serial and compared byte for byte with the inventory's, and refused
/// ([`CaError::RenewRefused`], 401) when it is unknown, revoked, superseded, not yet valid,
/// expired (unless a provisioner allowing it has `renew_after_expiry`), refused by the
/// handshake's verification for another reason, or no provisioner allows its names and
/// profile any longer.
fn renewable(state: &CaState, presented: &Presented) -> Result<Serial, CaError> {
    let refuse = |reason: String| CaError::RenewRefused { reason };
    let now = OffsetDateTime::now_utc();
    let id = certgate_pki::identity::PeerIdentity::from_der(&presented.der)
        .map_err(|_| refuse("the client certificate is not valid X.509".into()))?;
    let serial = Serial::parse(&id.serial_hex)
        .ok_or_else(|| refuse(format!("serial {} is not valid", id.serial_hex)))?;
    let record = state
        .ca
        .inventory()
        .find(&serial)
        .map_err(|source| PkiError::Store { path: state.ca.paths().inventory.clone(), source })?
        .ok_or_else(|| refuse(format!("certificate {serial} was not issued by this CA")))?;
    if record.der != presented.der {
        return Err(refuse(format!("certificate {serial} is not the one this CA issued")));
    }
    let who = format!("certificate {} (serial {serial})", record.name);
    match record.status {
        Status::Valid => {}
        Status::Revoked => return Err(refuse(format!("{who} is revoked"))),
        Status::Superseded => {
            let by = record.superseded_by.as_ref().map(Serial::to_string).unwrap_or_default();
            return Err(refuse(format!(
                "{who} was already renewed (superseded by serial {by}); renew the current one"
            )));
        }
    }
    let sans: Vec<San> = id
        .sans
        .dns
        .iter()
        .cloned()
        .chain(id.sans.ip.iter().map(ToString::to_string))
        .chain(id.sans.uri.iter().cloned())
        .chain(id.sans.email.iter().cloned())
        .map(|s| San::parse(&s))
        .collect::<Result<_, _>>()
        .map_err(|e| refuse(format!("{who}: {e}")))?;
    let provisioner = state
        .provisioners
        .list
        .iter()
        .find(|p| p.profile.as_str() == record.profile && sans.iter().all(|s| p.allows(s)))
        .ok_or_else(|| {
            let names: Vec<String> = sans.iter().map(ToString::to_string).collect();
            refuse(format!(
                "{who}: no provisioner allows {} with profile {} any longer",
                names.join(", "),
                record.profile
            ))
        })?;
    if now < record.not_before {
        return Err(refuse(format!("{who} is not valid yet")));
    }
    let expired = now >= record.not_after;
    if expired && !provisioner.renew_after_expiry {
        return Err(refuse(format!(
            "{who} expired on {}; renewal after expiry is off, request a new one",
            certgate_pki::validity::format_time(record.not_after)
        )));
    }
    if let Some(failure) = &presented.failure
        && !(expired && matches!(failure, certgate_pki::verify::VerifyError::Expired { .. }))
    {
        return Err(refuse(format!("{who} was refused on this connection: {failure}")));
    }
    Ok(serial)
}

/// The answer to `/sign`, `/renew` and `/rekey`: the leaf, its CA and the chain, PEM.
fn signed(state: &CaState, issued: &certgate_pki::ca::Issued) -> Signed {
    let crt = certgate_pki::pem::encode("CERTIFICATE", &issued.cert_der);
    let ca_pem = state.ca.issuing_pem();
    let mut chain = vec![crt.clone()];
    chain.extend(
        state.ca.intermediates().iter().map(|c| certgate_pki::pem::encode("CERTIFICATE", c)),
    );
    Signed {
        crt,
        ca: ca_pem,
        chain,
        serial: issued.record.serial.to_string(),
        name: issued.record.name.clone(),
    }
}

/// The CRL of `issuer`. The CA that signs leaves (the intermediate, or a root without one)
/// has its CRL kept current online: the one in `<ca-dir>/<issuer>.crl` is served while it
/// lists exactly the certificates revoked and stays valid for [`CRL_REFRESH_BEFORE`];
/// otherwise a new one is signed (valid [`CRL_LIFETIME`]) and kept there. A root above an
/// intermediate keeps its key offline: its CRL is the file `certgate crl --issuer root`
/// made, served as it is.
fn crl(ca: &mut Authority, issuer: CrlIssuer) -> Result<Vec<u8>, CaError> {
    let issuers = ca.crl_issuers();
    if !issuers.contains(&issuer) {
        return Err(CaError::UnknownIssuer { name: issuer.as_str().into(), known: issuers });
    }
    if issuers[0] != issuer {
        let path = ca.paths().published_crl(issuer);
        return match std::fs::read(&path) {
            Ok(der) => Ok(der),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(CaError::NoOfflineCrl { issuer })
            }
            Err(source) => Err(CaError::Pki(PkiError::Read { path, source })),
        };
    }
    let now = OffsetDateTime::now_utc();
    if let Some((der, _, _)) = ca.current_crl(issuer, now + CRL_REFRESH_BEFORE)? {
        return Ok(der);
    }
    let (der, number, listed) = ca.crl(issuer, CRL_LIFETIME, |_| Ok(()))?;
    tracing::info!(%issuer, number, listed, "signed a new CRL");
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crl_job(reply: oneshot::Sender<Result<Vec<u8>, CaError>>) -> Job {
        Job::Crl { issuer: CrlIssuer::Intermediate, reply }
    }

    /// A full queue is refused at once (503 with Retry-After), never waited on; a stopped CA
    /// thread is refused too.
    #[tokio::test]
    async fn full_queue_is_refused_at_once_with_retry_after() {
        let (jobs, rx) = mpsc::channel(1);
        let handle = CaHandle { jobs };
        handle.jobs.try_send(crl_job(oneshot::channel().0)).unwrap();
        let refused = handle.ask(crl_job).await.unwrap_err();
        assert!(matches!(refused, CaError::Busy), "{refused}");
        let resp = super::super::error(&refused);
        assert_eq!(resp.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[http::header::RETRY_AFTER], "1");
        drop(rx);
        let stopped = handle.ask(crl_job).await.unwrap_err();
        assert!(matches!(stopped, CaError::Stopped), "{stopped}");
        assert!(!handle.alive());
    }
}
