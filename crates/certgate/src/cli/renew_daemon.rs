//! `certgate cert renew NAME --ca-url URL --daemon`: keeps NAME.crt renewed by the online CA,
//! and what follows each renewal (a signal to a process, a hook), shared with the one-shot
//! renewal.
//!
//! The schedule is the one of `certgate_gateway::renewal::schedule`: due when a third of the
//! lifetime of the certificate on disk remains (minus jitter), waits in wall-clock slices,
//! jittered backoff after failures, never past the certificate's end. Each event is one line
//! on stderr.

use std::path::PathBuf;
use std::process::{ExitCode, Stdio};

use anyhow::Context;
use certgate_gateway::renewal::schedule::{self, due_at, human, random_unit};
use certgate_gateway::renewal::{Backoff, CertFiles, Current, ExpiresIn, RenewalError, RootPin};
use certgate_pki::validity::format_time;
use time::OffsetDateTime;

use super::cert::RenewArgs;

/// `cert renew NAME --ca-url URL --daemon`: runs until SIGTERM/SIGINT (exit 0) or until the
/// certificate cannot be renewed any more (the CA refused it, or it expired: non-zero).
pub fn run(a: &RenewArgs, url: &str) -> anyhow::Result<ExitCode> {
    certgate_pki::ca::check_file_name(&a.name)?;
    let files = CertFiles::in_dir(&a.out_dir, &a.name);
    let current = files.read()?;
    let expires_in = super::online::expires_in(a.expires_in.as_deref())?;
    // Refused at start: a window as long as the lifetime would renew again and again.
    expires_in.of_renewable(&current.validity).map_err(|reason| {
        let value = a.expires_in.as_deref().unwrap_or("33%");
        anyhow::anyhow!("--expires-in {value}: {reason} ({})", files.cert.display())
    })?;
    let daemon = Daemon {
        name: &a.name,
        url,
        pin: a.pin.pin()?,
        files: &files,
        expires_in,
        after: AfterRenewal::from_args(a),
        rekey: a.rekey.then_some(a.key_type),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(daemon.keep_renewed(current))
}

struct Daemon<'a> {
    name: &'a str,
    url: &'a str,
    pin: RootPin,
    files: &'a CertFiles,
    expires_in: ExpiresIn,
    after: AfterRenewal,
    /// `--rekey`: a new key of this type each time.
    rekey: Option<certgate_pki::keys::KeyType>,
}

impl Daemon<'_> {
    async fn keep_renewed(&self, mut current: Current) -> anyhow::Result<ExitCode> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let name = self.name;
        let now = OffsetDateTime::now_utc();
        let mut next = self.due(&current, now);
        log(format_args!(
            "keeping {name} renewed: serial {}, valid until {}, lifetime {}; next renewal at {}",
            current.serial,
            format_time(current.validity.not_after),
            human(current.validity.lifetime()),
            format_time(next)
        ));
        let mut backoff = Backoff::new();
        loop {
            let asked = tokio::select! {
                () = schedule::sleep_until(next) => false,
                _ = hup.recv() => true,
                _ = term.recv() => return Ok(stopping()),
                _ = int.recv() => return Ok(stopping()),
            };
            if asked {
                log(format_args!("SIGHUP: renewing {name} now"));
            } else if let Ok(on_disk) = self.files.read()
                && on_disk.serial != current.serial
            {
                // Replaced by someone else since (e.g. `cert request --force`): its own
                // schedule counts.
                current = on_disk;
                next = self.due(&current, OffsetDateTime::now_utc());
                if next > OffsetDateTime::now_utc() {
                    log(format_args!(
                        "{name} was replaced on disk (serial {}, valid until {}); next renewal \
                         at {}",
                        current.serial,
                        format_time(current.validity.not_after),
                        format_time(next)
                    ));
                    continue;
                }
            }
            let attempt = tokio::select! {
                r = self.renew() => r,
                _ = term.recv() => return Ok(stopping()),
                _ = int.recv() => return Ok(stopping()),
            };
            let now = OffsetDateTime::now_utc();
            let failure = match attempt {
                Ok(renewed) => {
                    current = renewed;
                    for outcome in self.after.run(self.files) {
                        match outcome {
                            Ok(line) => log(format_args!("{line}")),
                            Err(line) => log(format_args!("{line}; continuing")),
                        }
                    }
                    match self.renewed_due(&current, now) {
                        Ok(at) => {
                            log(format_args!(
                                "{} {name} serial {}, valid until {}; next renewal at {}",
                                self.verb(),
                                current.serial,
                                format_time(current.validity.not_after),
                                format_time(at)
                            ));
                            backoff.reset();
                            next = at;
                            continue;
                        }
                        Err(reason) => format!(
                            "{} {name} serial {}, valid until {}, but {reason}",
                            self.verb(),
                            current.serial,
                            format_time(current.validity.not_after)
                        ),
                    }
                }
                Err(e) if e.is_final() => {
                    return Err(e).with_context(|| {
                        format!("{name} (serial {}) can no longer be renewed", current.serial)
                    });
                }
                Err(e) => format!("renewing {name} failed: {e}"),
            };
            match backoff.next(&current.validity, now, random_unit()) {
                Some(wait) => {
                    let wait = time::Duration::try_from(wait).unwrap_or(time::Duration::ZERO);
                    log(format_args!("{failure}; retry in {}", human(wait)));
                    next = now + wait;
                }
                None => anyhow::bail!(
                    "{failure}; {name} (serial {}) expired at {}: renewal over mTLS is no \
                     longer possible, request a new certificate with `certgate cert request`",
                    current.serial,
                    format_time(current.validity.not_after)
                ),
            }
        }
    }

    /// Renews (or rekeys) the certificate on disk (read again: it may have been replaced)
    /// and returns the one written, as read back from disk.
    async fn renew(&self) -> Result<Current, RenewalError> {
        let on_disk = self.files.read()?;
        match self.rekey {
            Some(key_type) => {
                self.files.rekey(self.url, &self.pin, &on_disk, key_type).await?;
            }
            None => {
                self.files.renew(self.url, &self.pin, &on_disk).await?;
            }
        }
        self.files.read()
    }

    /// `renewed` or `rekeyed`, for the log.
    fn verb(&self) -> &'static str {
        if self.rekey.is_some() { "rekeyed" } else { "renewed" }
    }

    /// When `cert` is due, seen at `now` (now if it already is).
    fn due(&self, cert: &Current, now: OffsetDateTime) -> OffsetDateTime {
        let window = self.expires_in.of(&cert.validity);
        due_at(&cert.validity, window, now, random_unit())
    }

    /// When a certificate just received is due; an error when it already is (a CA that
    /// answers too short a lifetime must not make the daemon renew in a tight loop).
    fn renewed_due(&self, cert: &Current, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
        let window = self.expires_in.of_renewable(&cert.validity)?;
        let remaining = cert.validity.not_after - now;
        if remaining <= window {
            return Err(format!(
                "it is already due: {} of {} remain and renewal is due when {} remain",
                human(remaining),
                human(cert.validity.lifetime()),
                human(window)
            ));
        }
        Ok(due_at(&cert.validity, window, now, random_unit()))
    }
}

fn stopping() -> ExitCode {
    log(format_args!("stopping"));
    ExitCode::SUCCESS
}

/// One event, one line on stderr.
fn log(line: std::fmt::Arguments<'_>) {
    eprintln!("certgate: {line}");
}

/// What follows a renewal: a signal to a process (`--signal-pid`, `--pid-file`), then the
/// hook (`-- PROG ARG...`).
#[derive(Debug, Clone)]
pub struct AfterRenewal {
    target: Option<Target>,
    signal: Signal,
    hook: Vec<String>,
}

#[derive(Debug, Clone)]
enum Target {
    Pid(u32),
    PidFile(PathBuf),
}

impl AfterRenewal {
    pub fn from_args(a: &RenewArgs) -> AfterRenewal {
        let target = match (a.signal_pid, &a.pid_file) {
            (Some(pid), _) => Some(Target::Pid(pid)),
            (None, Some(file)) => Some(Target::PidFile(file.clone())),
            (None, None) => None,
        };
        AfterRenewal { target, signal: a.signal, hook: a.hook.clone() }
    }

    /// Sends the signal, then runs the hook (both are attempted): what each did, or why it
    /// failed, as a line for a person.
    pub fn run(&self, files: &CertFiles) -> Vec<Result<String, String>> {
        let mut outcomes = Vec::new();
        if let Some(target) = &self.target {
            outcomes.push(self.send(target).map_err(|e| format!("{e:#}")));
        }
        if !self.hook.is_empty() {
            outcomes.push(self.hook(files).map_err(|e| format!("{e:#}")));
        }
        outcomes
    }

    fn send(&self, target: &Target) -> anyhow::Result<String> {
        let sig = self.signal.name();
        let (pid, from) = match target {
            Target::Pid(pid) => (*pid, String::new()),
            Target::PidFile(file) => {
                let from = format!(" (from {})", file.display());
                let text = std::fs::read_to_string(file).with_context(|| {
                    format!("sending {sig}: reading the pid file {}", file.display())
                })?;
                let pid = text.trim().parse::<u32>().map_err(|_| {
                    anyhow::anyhow!(
                        "sending {sig}: {}: not a process id: {:?}",
                        file.display(),
                        text.trim()
                    )
                })?;
                (pid, from)
            }
        };
        let target = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .with_context(|| format!("sending {sig}: {pid}{from} is not a process id"))?;
        rustix::process::kill_process(target, self.signal.to_rustix())
            .with_context(|| format!("sending {sig} to pid {pid}{from}"))?;
        Ok(format!("sent {sig} to pid {pid}{from}"))
    }

    fn hook(&self, files: &CertFiles) -> anyhow::Result<String> {
        let Some((program, args)) = self.hook.split_first() else {
            return Ok(String::new());
        };
        let shown = self.hook.join(" ");
        let cert = std::path::absolute(&files.cert)?;
        let key = std::path::absolute(&files.key)?;
        let status = std::process::Command::new(program)
            .args(args)
            .env("CERTGATE_CERT", cert)
            .env("CERTGATE_KEY", key)
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("hook `{shown}`: could not start {program}"))?;
        if !status.success() {
            anyhow::bail!("hook `{shown}` failed: {status}");
        }
        Ok(format!("hook `{shown}` ran"))
    }
}

/// The signal sent after a renewal (`--signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Hup,
    Usr1,
    Usr2,
    Term,
    Int,
    Quit,
}

impl Signal {
    pub const ALL: [Signal; 6] =
        [Signal::Hup, Signal::Usr1, Signal::Usr2, Signal::Term, Signal::Int, Signal::Quit];

    /// As users write it for `--signal` (`hup`; `HUP` and `SIGHUP` are read too).
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Hup => "hup",
            Signal::Usr1 => "usr1",
            Signal::Usr2 => "usr2",
            Signal::Term => "term",
            Signal::Int => "int",
            Signal::Quit => "quit",
        }
    }

    /// `SIGHUP`, for messages.
    pub fn name(self) -> String {
        format!("SIG{}", self.as_str().to_ascii_uppercase())
    }

    pub fn parse(value: &str) -> Option<Signal> {
        let lower = value.trim().to_ascii_lowercase();
        let bare = lower.strip_prefix("sig").unwrap_or(&lower);
        Signal::ALL.into_iter().find(|s| s.as_str() == bare)
    }

    fn to_rustix(self) -> rustix::process::Signal {
        match self {
            Signal::Hup => rustix::process::Signal::HUP,
            Signal::Usr1 => rustix::process::Signal::USR1,
            Signal::Usr2 => rustix::process::Signal::USR2,
            Signal::Term => rustix::process::Signal::TERM,
            Signal::Int => rustix::process::Signal::INT,
            Signal::Quit => rustix::process::Signal::QUIT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_read_as_users_write_them() {
        assert_eq!(Signal::parse("hup"), Some(Signal::Hup));
        assert_eq!(Signal::parse("SIGUSR1"), Some(Signal::Usr1));
        assert_eq!(Signal::parse("Term"), Some(Signal::Term));
        assert_eq!(Signal::parse("kill"), None);
        assert_eq!(Signal::Hup.name(), "SIGHUP");
    }
}
