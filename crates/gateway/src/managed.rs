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

use crate::config::{ConfigError, ConfigErrors, CrlSource, ManagedSpec};
use crate::renewal::schedule::{self, Backoff, human, random_unit};
use crate::renewal::{Current, RenewalError, Request};

/// How long to wait before trying again when nothing can be done now (the certificate has
/// expired and no new token is there yet, or its files cannot be read).
const STALLED_RETRY: Duration = Duration::from_secs(60);

/// Requests the managed certificates of the configuration at `path` that have no usable
/// files yet; each line returned says what was done. Runs its own small runtime: call it
/// from a plain thread (before `serve`, or in the reload's loader).
pub fn bootstrap(path: &Path) -> Result<Vec<String>, ConfigErrors> {
    let fetched = crate::config::fetched(path)?;
    if fetched.managed.is_empty() && fetched.crls.is_empty() {
        return Ok(Vec::new());
    }
    let fail = |field: String, reason: String| {
        ConfigErrors(vec![ConfigError { file: path.to_path_buf(), field, reason }])
    };
    if let Some(dir) = &fetched.state_dir {
        create_state_dir(dir).map_err(|reason| fail("state_dir".into(), reason))?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(String::new(), format!("cannot start a runtime: {e}")))?;
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for spec in &fetched.managed {
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
    // A CRL with no cached copy is fetched now; one with a copy is refreshed in the
    // background, so a CA that is down does not stop a restart.
    for source in fetched.crls.iter().filter(|s| !s.cache.exists()) {
        match runtime.block_on(fetch_crl(source)) {
            Ok(_) => {
                done.push(format!("CRL {}: fetched into {}", source.url, source.cache.display()))
            }
            Err(reason) => errors.push(ConfigError {
                file: path.to_path_buf(),
                field: format!("crl {}", source.url),
                reason: format!("no copy yet, and fetching it failed: {reason}"),
            }),
        }
    }
    if errors.is_empty() { Ok(done) } else { Err(ConfigErrors(errors)) }
}

/// The largest CRL fetched (a CRL of a million revocations is about 40 MB; an internal CA's
/// is far smaller).
const MAX_CRL: usize = 64 * 1024 * 1024;

/// Fetches `source`'s CRL and replaces its cached copy when it is different and not older:
/// `Ok(true)` when the copy changed. A CRL that does not parse, or whose thisUpdate is
/// before the cached copy's (a replayed old CRL), is refused and the copy kept.
async fn fetch_crl(source: &CrlSource) -> Result<bool, String> {
    let bytes = crate::renewal::client::fetch(&source.url, &source.roots, MAX_CRL)
        .await
        .map_err(|e| e.to_string())?;
    let ders = match bytes.first() {
        Some(0x30) => vec![bytes.to_vec()],
        _ => certgate_pki::pem::crls_from_bytes(&bytes)
            .map_err(|reason| format!("{}: {reason}", source.url))?,
    };
    let mut this_update = None;
    for der in &ders {
        let t = certgate_pki::verify::crl_this_update(der)
            .ok_or_else(|| format!("{}: not a valid CRL", source.url))?;
        this_update = this_update.max(Some(t));
    }
    if let Ok(old) = std::fs::read(&source.cache) {
        if old == bytes.as_ref() {
            return Ok(false);
        }
        let old_update = certgate_pki::pem::read_crls(&source.cache)
            .ok()
            .and_then(|l| l.iter().filter_map(|d| certgate_pki::verify::crl_this_update(d)).max());
        if old_update > this_update {
            return Err(format!(
                "{}: the CRL answered is older than the copy kept (thisUpdate went back); kept the copy",
                source.url
            ));
        }
    }
    if let Some(dir) = source.cache.parent() {
        create_state_dir(dir)?;
    }
    certgate_pki::fs::write_atomic(
        &source.cache,
        &bytes,
        certgate_pki::fs::Mode::Public,
        Overwrite::Force,
    )
    .map_err(|e| e.to_string())?;
    Ok(true)
}

/// Keeps `source`'s cached CRL fresh until aborted: every `refresh`, and before its
/// nextUpdate; failures retried with backoff (10 s doubling, up to `refresh`).
async fn keep_fetched(source: CrlSource, reload: mpsc::Sender<()>, status: Arc<Status>) {
    let mut failures = 0u32;
    loop {
        let wait = match fetch_crl(&source).await {
            Ok(changed) => {
                failures = 0;
                status.crl_fetched(&source.url, "success");
                if changed {
                    tracing::info!("CRL {} changed; reloading", source.url);
                    let _ = reload.try_send(());
                }
                source.refresh
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                status.crl_fetched(&source.url, "failure");
                let wait = Duration::from_secs(10)
                    .saturating_mul(1 << failures.min(16))
                    .min(source.refresh.max(Duration::from_secs(10)));
                let wait = wait.mul_f64(0.5 + random_unit() / 2.0);
                tracing::warn!(
                    "CRL {}: {error}; keeping the cached copy, retrying in {}",
                    source.url,
                    human(time::Duration::try_from(wait).unwrap_or_default())
                );
                wait
            }
        };
        // Never sleep past the copy's nextUpdate: a fresher CRL is due then.
        let next_update = certgate_pki::pem::read_crls(&source.cache)
            .ok()
            .and_then(|l| l.iter().filter_map(|d| certgate_pki::verify::crl_next_update(d)).min());
        let now = OffsetDateTime::now_utc();
        let mut at = now + wait;
        if let Some(next) = next_update
            && let Ok(next) = OffsetDateTime::from_unix_timestamp(
                i64::try_from(next.as_secs()).unwrap_or(i64::MAX),
            )
            && next > now
        {
            at = at.min(next);
        }
        schedule::sleep_until(at).await;
    }
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
pub(crate) fn token_claims(token: &str) -> Result<(String, Vec<String>), String> {
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
    crl_fetches: Family<UrlLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UrlLabels {
    url: String,
    result: &'static str,
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
        registry.register(
            "crl_fetches",
            "Fetches of CRLs given by URL, by result (success, failure)",
            self.crl_fetches.clone(),
        );
    }

    fn crl_fetched(&self, url: &str, result: &'static str) {
        self.crl_fetches.get_or_create(&UrlLabels { url: url.to_string(), result }).inc();
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
}

/// One task per managed certificate and per CRL URL, replaced when a reload changes its
/// settings.
pub struct Fetchers {
    certs: HashMap<String, (ManagedSpec, tokio::task::AbortHandle)>,
    crls: HashMap<String, (CrlSource, tokio::task::AbortHandle)>,
    reload: mpsc::Sender<()>,
    status: Arc<Status>,
}

impl Fetchers {
    /// Tasks that ask `reload` for a reload after writing a renewed certificate or a changed
    /// CRL.
    pub fn new(reload: mpsc::Sender<()>, status: Arc<Status>) -> Fetchers {
        Fetchers { certs: HashMap::new(), crls: HashMap::new(), reload, status }
    }

    /// Runs a task for each of `specs` and `crls`: new ones start, changed ones restart,
    /// removed ones stop.
    pub fn update(&mut self, specs: &[ManagedSpec], crls: &[CrlSource]) {
        let status = self.status.clone();
        reconcile(
            &mut self.certs,
            specs,
            |s| &s.name,
            |s| tokio::spawn(keep_renewed(s.clone(), self.reload.clone(), status.clone())),
        );
        let names: Vec<&String> = specs.iter().map(|s| &s.name).collect();
        self.status.lock().retain(|name, _| names.contains(&name));
        reconcile(
            &mut self.crls,
            crls,
            |s| &s.url,
            |s| tokio::spawn(keep_fetched(s.clone(), self.reload.clone(), status.clone())),
        );
    }
}

/// Stops the tasks in `running` whose settings are not in `wanted` and starts one with
/// `start` for each of `wanted` not running.
fn reconcile<S: PartialEq + Clone>(
    running: &mut HashMap<String, (S, tokio::task::AbortHandle)>,
    wanted: &[S],
    key: impl Fn(&S) -> &String,
    start: impl Fn(&S) -> tokio::task::JoinHandle<()>,
) {
    running.retain(|_, (spec, task)| {
        let keep = wanted.contains(spec);
        if !keep {
            task.abort();
        }
        keep
    });
    for spec in wanted {
        if !running.contains_key(key(spec)) {
            running.insert(key(spec).clone(), (spec.clone(), start(spec).abort_handle()));
        }
    }
}

impl Drop for Fetchers {
    fn drop(&mut self) {
        self.certs.values().for_each(|(_, task)| task.abort());
        self.crls.values().for_each(|(_, task)| task.abort());
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
