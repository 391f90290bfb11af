//! Managed certificates: listener and upstream client certificates that the gateway requests
//! from the online CA (`certgate ca serve`) and keeps renewed, with no restart.
//!
//! - **First certificate.** Before a configuration is loaded (at start and on each reload),
//!   [`bootstrap`] requests every managed certificate whose files are missing or expired,
//!   with the one-time token in its `token_file`: a key made here, a CSR, `POST /sign`. The
//!   SHA-256 of a token once used is kept next to the files, so a token is never sent twice.
//! - **Renewal.** One task per certificate ([`Renewers`]) renews over mTLS (`POST /renew`)
//!   after about two thirds of the lifetime, with jitter, re-reading the wall clock at least
//!   every minute; failures are retried with jittered backoff, never past the end. The new
//!   certificate is written atomically, then the normal reload swaps it in: the usual checks
//!   run, new handshakes get the new certificate, and a failed reload keeps the old one.
//! - When the CA refuses a renewal for good (revoked, superseded, expired), a fresh token in
//!   `token_file` gets a new certificate with a new key.
//! - **Reported** in the log, in `/status` (`managed`), in `/metrics`
//!   (`certgate_certificate_renewals_total{name,result}`, the last success, the failures in a
//!   row) and on `/readyz`, which names failing renewals and answers 503 only once a managed
//!   certificate has expired.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use certgate_pki::fs::Overwrite;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::config::{ConfigError, ConfigErrors, ManagedSpec};
use crate::renewal::schedule::{self, Backoff, human, random_unit};
use crate::renewal::{Current, RenewalError, Request};

/// How long to wait before trying again when nothing can be done now (the certificate has
/// expired and no new token is there yet, or its files cannot be read).
const STALLED_RETRY: Duration = Duration::from_secs(60);

/// Requests the managed certificates of the configuration at `path` that have no usable
/// files yet; each line returned says what was done. Runs its own small runtime: call it
/// from a plain thread (before `serve`, or in the reload's loader).
pub fn bootstrap(path: &Path) -> Result<Vec<String>, ConfigErrors> {
    let (specs, state_dir) = crate::config::managed_specs(path)?;
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let fail = |field: String, reason: String| {
        ConfigErrors(vec![ConfigError { file: path.to_path_buf(), field, reason }])
    };
    if let Some(dir) = &state_dir {
        create_state_dir(dir).map_err(|reason| fail("state_dir".into(), reason))?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(String::new(), format!("cannot start a runtime: {e}")))?;
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for spec in &specs {
        match runtime.block_on(ensure(spec)) {
            Ok(Some(line)) => done.push(line),
            Ok(None) => {}
            Err(reason) => errors.push(ConfigError {
                file: path.to_path_buf(),
                field: format!("managed {}", spec.name),
                reason,
            }),
        }
    }
    if errors.is_empty() { Ok(done) } else { Err(ConfigErrors(errors)) }
}

/// The state directory, made 0700 when missing.
fn create_state_dir(dir: &Path) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Requests `spec`'s certificate when its files are missing, unusable or expired; `None`
/// when the files in place are good.
async fn ensure(spec: &ManagedSpec) -> Result<Option<String>, String> {
    let why = match spec.files.read() {
        Ok(current) if current.validity.not_after > OffsetDateTime::now_utc() => return Ok(None),
        Ok(current) => format!("expired at {}", rfc3339(current.validity.not_after)),
        Err(_) if !spec.files.cert.exists() && !spec.files.key.exists() => {
            "no certificate yet".into()
        }
        Err(e) => e.to_string(),
    };
    match request_with_token(spec).await {
        Ok(Some(got)) => Ok(Some(format!(
            "managed certificate {} ({why}): received serial {}, valid until {}",
            spec.name,
            got.serial,
            rfc3339(got.validity.not_after)
        ))),
        Ok(None) => Err(format!(
            "{}: {why}, and {}",
            spec.files.cert.display(),
            match &spec.token_file {
                Some(t) => format!(
                    "the token in {} was used already; put a new one there (`certgate ca token \
                     NAME --san ...`)",
                    t.display()
                ),
                None => "no token_file is configured to request one".into(),
            }
        )),
        Err(e) => Err(format!("{}: {why}; requesting one failed: {e}", spec.files.cert.display())),
    }
}

/// A new certificate with the token in `spec.token_file`, when there is one not used before.
async fn request_with_token(spec: &ManagedSpec) -> Result<Option<Current>, RenewalError> {
    let Some(token_file) = &spec.token_file else { return Ok(None) };
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| RenewalError::Files { path: token_file.clone(), reason: e.to_string() })?;
    let token = token.trim();
    let used = spec.files.cert.with_extension("token-used");
    let digest = hex(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()));
    if std::fs::read_to_string(&used).is_ok_and(|d| d.trim() == digest) {
        return Ok(None);
    }
    let claims = token_claims(token)
        .map_err(|reason| RenewalError::Files { path: token_file.clone(), reason })?;
    let req = Request {
        name: &claims.0,
        sans: &claims.1,
        key_type: spec.key_type,
        token,
        lifetime: spec.lifetime,
    };
    // The state directory is the gateway's own: an expired or half-written pair there is
    // replaced (never a file the user named).
    let got = spec.files.request(&spec.ca_url, &spec.pin, &req, Overwrite::Force).await?;
    certgate_pki::fs::write_atomic(
        &used,
        format!("{digest}\n").as_bytes(),
        certgate_pki::fs::Mode::Public,
        Overwrite::Force,
    )?;
    Ok(Some(got))
}

/// The name (`sub`) and SANs (`sans`) a one-time token allows, read from its payload (the CA
/// checks its signature; the client only asks for what it names).
fn token_claims(token: &str) -> Result<(String, Vec<String>), String> {
    use base64::Engine;
    let payload =
        token.split('.').nth(1).ok_or("not a one-time token (a JWS from `certgate ca token`)")?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "not a one-time token: its payload is not base64url")?;
    let claims: serde_json::Value = serde_json::from_slice(&json)
        .map_err(|_| "not a one-time token: its payload is not JSON")?;
    let sub = claims["sub"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("the token names no subject (sub)")?;
    let sans = claims["sans"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    Ok((sub.to_string(), sans))
}

fn hex(digest: &aws_lc_rs::digest::Digest) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339(t: OffsetDateTime) -> String {
    certgate_pki::validity::rfc3339(t)
}

/// Where each managed certificate stands, for `/status`, `/readyz` and `/metrics`.
#[derive(Default)]
pub struct Status {
    certs: Mutex<BTreeMap<String, CertState>>,
    renewals: Family<RenewalLabels, Counter>,
    last_success: Family<NameLabel, Gauge>,
    failures: Family<NameLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenewalLabels {
    name: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

/// One managed certificate's state, as `/status` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CertState {
    pub name: String,
    pub serial: String,
    pub not_after: String,
    /// When the next renewal (or retry) is planned.
    pub next_attempt: String,
    pub last_success: Option<String>,
    pub failures_in_a_row: u32,
    pub last_error: Option<String>,
    #[serde(skip)]
    expires: Option<OffsetDateTime>,
}

impl Status {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "certificate_renewals",
            "Renewals of managed certificates by result (success, failure)",
            self.renewals.clone(),
        );
        registry.register_with_unit(
            "certificate_renewal_last_success_timestamp",
            "When each managed certificate was last renewed or requested",
            Unit::Seconds,
            self.last_success.clone(),
        );
        registry.register(
            "certificate_renewal_failures_in_a_row",
            "Failed renewal attempts since the last success, per managed certificate",
            self.failures.clone(),
        );
    }

    /// Every managed certificate's state, by name.
    pub fn snapshot(&self) -> Vec<CertState> {
        self.lock().values().cloned().collect()
    }

    /// Managed certificates past their end at `now` (the gateway is then not ready), and
    /// those whose renewal is failing: one line each for `/readyz`.
    pub fn readiness(&self, now: OffsetDateTime) -> (Vec<String>, Vec<String>) {
        let (mut expired, mut failing) = (Vec::new(), Vec::new());
        for c in self.lock().values() {
            let error = c.last_error.as_deref().unwrap_or("no renewal succeeded");
            if c.expires.is_some_and(|t| t <= now) {
                expired.push(format!(
                    "managed certificate {} expired at {} ({error})",
                    c.name, c.not_after
                ));
            } else if c.failures_in_a_row > 0 {
                failing.push(format!(
                    "managed certificate {}: {} renewal attempt(s) failed, valid until {}, next \
                     attempt {}: {error}",
                    c.name, c.failures_in_a_row, c.not_after, c.next_attempt
                ));
            }
        }
        (expired, failing)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, CertState>> {
        self.certs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut CertState)) {
        let mut certs = self.lock();
        let state = certs.entry(name.to_string()).or_insert_with(|| CertState {
            name: name.to_string(),
            serial: String::new(),
            not_after: String::new(),
            next_attempt: String::new(),
            last_success: None,
            failures_in_a_row: 0,
            last_error: None,
            expires: None,
        });
        f(state);
        self.failures
            .get_or_create(&NameLabel { name: name.to_string() })
            .set(i64::from(state.failures_in_a_row));
    }

    fn scheduled(&self, name: &str, current: &Current, at: OffsetDateTime) {
        self.update(name, |s| {
            s.serial = current.serial.clone();
            s.not_after = rfc3339(current.validity.not_after);
            s.expires = Some(current.validity.not_after);
            s.next_attempt = rfc3339(at);
        });
    }

    fn succeeded(&self, name: &str) {
        let now = OffsetDateTime::now_utc();
        self.renewals.get_or_create(&RenewalLabels { name: name.into(), result: "success" }).inc();
        self.last_success.get_or_create(&NameLabel { name: name.into() }).set(now.unix_timestamp());
        self.update(name, |s| {
            s.last_success = Some(rfc3339(now));
            s.failures_in_a_row = 0;
            s.last_error = None;
        });
    }

    fn failed(&self, name: &str, error: &str, retry: Duration) {
        self.renewals.get_or_create(&RenewalLabels { name: name.into(), result: "failure" }).inc();
        let at = OffsetDateTime::now_utc() + retry;
        self.update(name, |s| {
            s.failures_in_a_row = s.failures_in_a_row.saturating_add(1);
            s.last_error = Some(error.to_string());
            s.next_attempt = rfc3339(at);
        });
    }

    fn forget(&self, name: &str) {
        self.lock().remove(name);
    }
}

/// One renewal task per managed certificate, replaced when a reload changes its settings.
pub struct Renewers {
    tasks: HashMap<String, (ManagedSpec, tokio::task::AbortHandle)>,
    reload: mpsc::Sender<()>,
    status: Arc<Status>,
}

impl Renewers {
    /// Renewers that ask `reload` for a reload after writing a renewed certificate.
    pub fn new(reload: mpsc::Sender<()>, status: Arc<Status>) -> Renewers {
        Renewers { tasks: HashMap::new(), reload, status }
    }

    /// Runs a task for each of `specs`: new ones start, changed ones restart, removed ones
    /// stop.
    pub fn update(&mut self, specs: &[ManagedSpec]) {
        self.tasks.retain(|name, (spec, task)| {
            let keep = specs.iter().any(|s| s == spec);
            if !keep {
                task.abort();
                if !specs.iter().any(|s| &s.name == name) {
                    self.status.forget(name);
                }
            }
            keep
        });
        for spec in specs {
            if self.tasks.contains_key(&spec.name) {
                continue;
            }
            let task =
                tokio::spawn(keep_renewed(spec.clone(), self.reload.clone(), self.status.clone()));
            self.tasks.insert(spec.name.clone(), (spec.clone(), task.abort_handle()));
        }
    }
}

impl Drop for Renewers {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}

/// Keeps `spec`'s certificate renewed until aborted.
async fn keep_renewed(spec: ManagedSpec, reload: mpsc::Sender<()>, status: Arc<Status>) {
    let name = spec.name.as_str();
    let mut backoff = Backoff::new();
    loop {
        let current = match spec.files.read() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("managed certificate {name}: {e}; trying again in a minute");
                status.failed(name, &e.to_string(), STALLED_RETRY);
                tokio::time::sleep(STALLED_RETRY).await;
                continue;
            }
        };
        let validity = current.validity;
        let expires_in = spec.expires_in.of_renewable(&validity).unwrap_or_else(|reason| {
            tracing::warn!("managed certificate {name}: expires_in: {reason}; using a third");
            schedule::ExpiresIn::default().of(&validity)
        });
        let at = schedule::due_at(&validity, expires_in, OffsetDateTime::now_utc(), random_unit());
        status.scheduled(name, &current, at);
        schedule::sleep_until(at).await;
        let result = match attempt(&spec, &current).await {
            Ok(new) if new.validity.not_after - OffsetDateTime::now_utc() <= expires_in => {
                Err(format!(
                    "the CA answered a certificate (serial {}) that is already due for renewal: \
                     its lifetime {} is too short for expires_in",
                    new.serial,
                    human(new.validity.lifetime())
                ))
            }
            Ok(new) => Ok(new),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(new) => {
                backoff.reset();
                status.succeeded(name);
                tracing::info!(
                    "managed certificate {name} renewed: serial {}, valid until {}",
                    new.serial,
                    rfc3339(new.validity.not_after)
                );
                // A full queue already holds a reload that reads the new files.
                let _ = reload.try_send(());
            }
            Err(error) => {
                let now = OffsetDateTime::now_utc();
                let wait = backoff.next(&validity, now, random_unit()).unwrap_or(STALLED_RETRY);
                status.failed(name, &error, wait);
                tracing::warn!(
                    "managed certificate {name}: renewal failed (valid until {}): {error}; \
                     retrying in {}",
                    rfc3339(validity.not_after),
                    human(time::Duration::try_from(wait).unwrap_or_default())
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One renewal: over mTLS with the current certificate; when the CA refuses it for good
/// (or it has expired), a new certificate with a fresh token from `token_file`.
async fn attempt(spec: &ManagedSpec, current: &Current) -> Result<Current, RenewalError> {
    let renewed = spec.files.renew(&spec.ca_url, &spec.pin, current).await;
    match renewed {
        Ok(new) => Ok(new),
        Err(e) if e.is_final() || current.validity.not_after <= OffsetDateTime::now_utc() => {
            match request_with_token(spec).await? {
                Some(new) => {
                    tracing::warn!(
                        "managed certificate {}: the CA refused the renewal ({e}); a new \
                         certificate was requested with the token in token_file",
                        spec.name
                    );
                    Ok(new)
                }
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_claims_read_the_name_and_sans() {
        use base64::Engine;
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = format!(
            "{}.{}.sig",
            enc(r#"{"alg":"ES256"}"#),
            enc(r#"{"sub":"gw","sans":["gw.example.com","10.0.0.1"]}"#)
        );
        let (sub, sans) = token_claims(&token).unwrap();
        assert_eq!(sub, "gw");
        assert_eq!(sans, ["gw.example.com", "10.0.0.1"]);
        assert!(token_claims("nonsense").is_err());
        assert!(token_claims(&format!("a.{}.c", enc(r#"{"sans":[]}"#))).is_err());
    }
}
