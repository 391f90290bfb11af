//! The CA thread: one dedicated thread owns the [`Authority`] (its signing key loaded once, the
//! inventory) and serves jobs from a bounded queue, each answered on its own oneshot channel.
//! One writer serialises serials, CRL numbers and inventory transactions; the async runtime
//! never blocks on SQLite or a signature. A full queue is refused at once
//! ([`CaError::Busy`]), never waited on.
//!
//! Every job commits its inventory transaction before its answer is sent: an answer lost on
//! the way leaves a recorded (and revocable) certificate, never an unrecorded one.

use certgate_pki::PkiError;
use certgate_pki::ca::Authority;
use certgate_pki::crl::CrlIssuer;
use time::{Duration, OffsetDateTime};
use tokio::sync::{mpsc, oneshot};

use super::CaError;

/// How long a CRL the service signs is valid (its nextUpdate).
pub const CRL_LIFETIME: Duration = Duration::hours(24);

/// A CRL whose nextUpdate is closer than this is signed again before it is served, so relying
/// parties that cache it until nextUpdate never hold an expired one.
pub const CRL_REFRESH_BEFORE: Duration = Duration::hours(8);

/// One piece of work for the CA thread.
pub enum Job {
    /// The DER CRL of `issuer`.
    Crl { issuer: CrlIssuer, reply: oneshot::Sender<Result<Vec<u8>, CaError>> },
}

/// The sending side of the CA thread's queue.
#[derive(Clone)]
pub struct CaHandle {
    jobs: mpsc::Sender<Job>,
}

impl CaHandle {
    /// Starts the CA thread with `ca` and a queue of `capacity` jobs (at least 1).
    pub fn start(ca: Authority, capacity: usize) -> Result<CaHandle, CaError> {
        let (jobs, rx) = mpsc::channel(capacity.max(1));
        std::thread::Builder::new()
            .name("certgate-ca".into())
            .spawn(move || run(ca, rx))
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
fn run(mut ca: Authority, mut jobs: mpsc::Receiver<Job>) {
    let ca = &mut ca;
    while let Some(job) = jobs.blocking_recv() {
        match job {
            Job::Crl { issuer, reply } => {
                // The requester may have gone away (timeout, closed connection): the work
                // is done anyway and the answer dropped.
                let _ = reply.send(crl(ca, issuer));
            }
        }
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
