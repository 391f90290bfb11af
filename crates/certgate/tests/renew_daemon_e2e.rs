//! `certgate cert renew NAME --ca-url URL --daemon` against the real online CA (`certgate ca
//! serve`): certificates that live two minutes kept renewed, a process signalled and a hook
//! run after each renewal, files that a reader looping on them always finds complete and
//! matching, SIGHUP to renew at once, SIGTERM to stop, and a revoked certificate ending the
//! daemon with the CA's reason.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ca_support;
mod gateway_support;
mod pki_support;

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ca_support::{ca_serve, cert_request, pair_reader, pair_reader_result, public_key, serial};
use gateway_support::{Gateway, Proc};
use pki_support::{CERTGATE, Scratch, help_examples, openssl_verify, text};

/// A running `certgate cert renew ... --daemon`, its stderr in `LOG` in the scratch dir.
struct Daemon {
    proc: Proc,
    log: PathBuf,
}

impl Daemon {
    /// Starts `certgate cert renew NAME --ca-url URL --root root.crt --daemon ARGS` in the
    /// scratch dir and waits for its first line ("keeping NAME renewed").
    fn start(s: &Scratch, gw: &Gateway, name: &str, args: &[&str], log: &str) -> Daemon {
        let url = gw.url("");
        let mut all = vec!["cert", "renew", name, "--ca-url", &url, "--root", "root.crt"];
        all.push("--daemon");
        all.extend_from_slice(args);
        Daemon::spawn(s, &all, log)
    }

    /// Starts `certgate ARGS` (a daemon) in the scratch dir and waits for its first line.
    fn spawn(s: &Scratch, args: &[&str], log: &str) -> Daemon {
        let log = s.path(log);
        let child = Command::new(CERTGATE)
            .current_dir(&s.dir)
            .env("CERTGATE_CA_DIR", "ca")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(s.path("daemon.out")).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let mut daemon = Daemon { proc: Proc(child), log };
        daemon.wait_for("renewed: serial", 1, Duration::from_secs(15));
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `text` `count` times; fails on timeout or an early exit.
    fn wait_for(&mut self, text: &str, count: usize, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if log.matches(text).count() >= count {
                return log;
            }
            if let Ok(Some(status)) = self.proc.0.try_wait() {
                panic!("the daemon exited ({status}) before {count}× {text:?}: {log}");
            }
            assert!(Instant::now() < deadline, "no {count}× {text:?} in {within:?}: {log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.proc.0.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Waits (`within` at most) for the daemon to exit.
    fn exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.proc.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {within:?}: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A shell that appends a line to `out` for each SIGHUP, its pid in `pid_file` (waited for).
fn hup_counter(s: &Scratch, pid_file: &str, out: &str) -> Proc {
    let script = format!(
        "trap 'echo hup >> {out}' HUP; echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; while :; do sleep 0.1; done"
    );
    let child = Command::new("sh").current_dir(&s.dir).args(["-c", &script]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.path(pid_file).exists() {
        assert!(Instant::now() < deadline, "{pid_file} never written");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

/// Lines in the scratch file `name` (none when it does not exist).
fn lines(s: &Scratch, name: &str) -> Vec<String> {
    std::fs::read_to_string(s.path(name)).unwrap_or_default().lines().map(str::to_string).collect()
}

/// Waits (5 s at most) until the scratch file `name` has `count` lines.
fn wait_for_lines(s: &Scratch, name: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = lines(s, name);
        if got.len() >= count || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A token for `name` (SAN `name.example.com`) and `cert request` with `args`.
fn request(s: &Scratch, gw: &Gateway, name: &str, args: &[&str]) {
    let san = format!("{name}.example.com");
    let token = s.ok(&["ca", "token", name, "--san", &san]);
    let mut all = vec!["--root", "root.crt", "--san", &san];
    all.extend_from_slice(args);
    let got = cert_request(s, gw, name, token.trim(), &all);
    assert!(got.status.success(), "{}", text(&got));
}

fn abs(s: &Scratch, name: &str) -> String {
    s.path(name).display().to_string()
}

/// The daemon renews a two-minute certificate (renewal due about 20 s after issuance) twice
/// in a row by itself, then at once on SIGHUP, each time from the certificate just written:
/// after each renewal the process in --pid-file gets one SIGHUP and then the hook runs once
/// with CERTGATE_CERT/CERTGATE_KEY; the key is kept and openssl verifies each new
/// certificate; a reader looping on the files all along (Python's cryptography) never finds
/// a half-written file or a certificate that is not the key's. Revoked, the certificate's
/// next renewal ends the daemon with non-zero and the CA's reason.
#[test]
fn daemon_keeps_a_two_minute_certificate_renewed_until_it_is_revoked() {
    let s = Scratch::with_ca(&[]);
    let gw = ca_serve(&s, &[]);
    request(&s, &gw, "app", &["--minutes", "1"]);
    let key = s.read("app.key");
    let first_serial = serial(&s, "app.crt");
    let _target = hup_counter(&s, "target.pid", "hups.log");
    std::fs::write(s.path("hook.sh"), "echo \"$1 $CERTGATE_CERT $CERTGATE_KEY\" >> hook.log\n")
        .unwrap();
    let reader = pair_reader(&s, "app");

    let started = Instant::now();
    let mut daemon = Daemon::start(
        &s,
        &gw,
        "app",
        &["--pid-file", "target.pid", "--", "sh", "hook.sh", "renewed"],
        "daemon.log",
    );
    let log = daemon.log();
    assert!(log.contains("lifetime 2m") && log.contains("next renewal at"), "{log}");

    // Two renewals by schedule: about 20 s after each issuance, not before ~13 s.
    daemon.wait_for("renewed app serial", 1, Duration::from_secs(40));
    let first = started.elapsed();
    assert!(first > Duration::from_secs(10), "renewed after {first:?}: too early");
    let second_serial = serial(&s, "app.crt");
    assert_ne!(second_serial, first_serial);
    let log = daemon.wait_for("renewed app serial", 2, Duration::from_secs(40));
    let second = started.elapsed() - first;
    assert!(second > Duration::from_secs(10), "renewed again after {second:?}: {log}");
    assert_ne!(serial(&s, "app.crt"), second_serial);
    assert_eq!(s.read("app.key"), key, "the key is kept");
    assert_eq!(public_key(&s, "app.crt", true), public_key(&s, "app.key", false));
    let verify = openssl_verify(&s, "app.crt", "sslclient");
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(log.contains("sent SIGHUP to pid") && log.contains("(from target.pid)"), "{log}");
    assert!(log.contains("hook `sh hook.sh renewed` ran"), "{log}");
    assert!(!log.contains("retry in"), "no failure: {log}");

    // One signal and one hook run per renewal, the hook with the files' absolute paths.
    assert_eq!(wait_for_lines(&s, "hups.log", 2).len(), 2, "{log}");
    let hook = lines(&s, "hook.log");
    let expected = format!("renewed {} {}", abs(&s, "app.crt"), abs(&s, "app.key"));
    assert_eq!(hook, vec![expected.clone(), expected.clone()], "{log}");

    // SIGHUP: renewed at once.
    let before = serial(&s, "app.crt");
    let asked = Instant::now();
    daemon.signal("HUP");
    let log = daemon.wait_for("renewed app serial", 3, Duration::from_secs(10));
    assert!(asked.elapsed() < Duration::from_secs(8), "{log}");
    assert!(log.contains("SIGHUP: renewing app now"), "{log}");
    assert_ne!(serial(&s, "app.crt"), before);
    assert_eq!(wait_for_lines(&s, "hups.log", 3).len(), 3, "{log}");
    assert_eq!(wait_for_lines(&s, "hook.log", 3).len(), 3, "{log}");

    // The reader saw every serial and never a broken or mismatched pair.
    let seen = pair_reader_result(&s, "app", reader);
    assert_eq!(seen["failures"], serde_json::json!([]), "{seen}");
    assert!(seen["reads"].as_u64().unwrap() > 100, "{seen}");
    assert_eq!(seen["serials"].as_array().unwrap().len(), 4, "{seen}");

    // Revoked: the next renewal (asked for now) ends the daemon with the CA's reason.
    s.ok(&["cert", "revoke", "app"]);
    daemon.signal("HUP");
    let status = daemon.exit(Duration::from_secs(15));
    let log = daemon.log();
    assert!(!status.success(), "{log}");
    assert!(log.contains("can no longer be renewed") && log.contains("revoked"), "{log}");
    assert!(log.contains(&gw.url("/renew")), "{log}");
}

/// SIGTERM and SIGINT stop the daemon with 0; a signal or hook that fails is logged and the
/// daemon goes on (a one-shot renewal fails instead); a CA that cannot be reached is retried
/// with backoff; an --expires-in as long as the lifetime is refused at start; the --daemon
/// examples of `cert renew --help` run as printed.
#[test]
fn daemon_stops_on_sigterm_and_survives_failures_it_can_retry() {
    let s = Scratch::with_ca(&[]);
    let gw = ca_serve(&s, &[]);
    request(&s, &gw, "api", &["--minutes", "30"]);

    let err = s.fails(&[
        "cert",
        "renew",
        "api",
        "--ca-url",
        &gw.url(""),
        "--root",
        "root.crt",
        "--daemon",
        "--expires-in",
        "40m",
    ]);
    assert!(err.contains("--expires-in 40m") && err.contains("lives 31m"), "{err}");
    assert!(err.contains("api.crt"), "{err}");

    // A pid file that does not exist and a hook that fails: logged, and the daemon goes on.
    let mut daemon = Daemon::start(
        &s,
        &gw,
        "api",
        &["--pid-file", "missing.pid", "--signal", "usr1", "--", "false"],
        "failing.log",
    );
    daemon.signal("HUP");
    let log = daemon.wait_for("renewed api serial", 1, Duration::from_secs(10));
    assert!(log.contains("sending SIGUSR1: reading the pid file missing.pid"), "{log}");
    assert!(log.contains("hook `false` failed: exit status: 1; continuing"), "{log}");
    daemon.signal("TERM");
    assert_eq!(daemon.exit(Duration::from_secs(10)).code(), Some(0), "{}", daemon.log());
    assert!(daemon.log().contains("certgate: stopping"));

    // The same hook in a one-shot renewal fails the run (after renewing).
    let once = s.run(&[
        "cert",
        "renew",
        "api",
        "--ca-url",
        &gw.url(""),
        "--root",
        "root.crt",
        "--",
        "false",
    ]);
    assert!(!once.status.success(), "{}", text(&once));
    assert!(text(&once).contains("api was renewed, but hook `false` failed"), "{}", text(&once));

    // The --daemon examples of `cert renew --help`, with this CA and a signal target: each
    // renews on SIGHUP, signals or runs its hook, and stops with 0 on SIGINT.
    let _target = hup_counter(&s, "nginx.pid", "nginx-hups.log");
    let examples: Vec<Vec<String>> = help_examples(&s, &["cert", "renew"])
        .into_iter()
        .filter(|e| e.contains(&"--daemon".to_string()))
        .collect();
    assert_eq!(examples.len(), 2, "{examples:?}");
    for (i, example) in examples.iter().enumerate() {
        let args: Vec<String> = example
            .iter()
            .map(|w| match w.as_str() {
                url if url.starts_with("https://ca.example.com") => gw.url(""),
                "/run/nginx.pid" => "nginx.pid".to_string(),
                w => w.to_string(),
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut daemon = Daemon::spawn(&s, &args, &format!("example{i}.log"));
        daemon.signal("HUP");
        let log = daemon.wait_for("renewed api serial", 1, Duration::from_secs(10));
        assert!(log.contains("sent SIGHUP to pid") || log.contains("ran"), "{log}");
        daemon.signal("INT");
        assert_eq!(daemon.exit(Duration::from_secs(10)).code(), Some(0), "{}", daemon.log());
    }
    assert_eq!(wait_for_lines(&s, "nginx-hups.log", 1).len(), 1);
    let pem = std::fs::read_to_string(s.path("api.pem")).unwrap();
    assert_eq!(
        pem,
        format!(
            "{}{}",
            std::fs::read_to_string(s.path("api.crt")).unwrap(),
            std::fs::read_to_string(s.path("api.key")).unwrap()
        )
    );

    // The CA gone: retried with backoff, the daemon keeps running; SIGTERM stops it.
    let mut daemon = Daemon::start(&s, &gw, "api", &[], "unreachable.log");
    drop(gw);
    daemon.signal("HUP");
    let log = daemon.wait_for("retry in", 1, Duration::from_secs(40));
    assert!(log.contains("renewing api failed:"), "{log}");
    daemon.signal("TERM");
    assert_eq!(daemon.exit(Duration::from_secs(10)).code(), Some(0), "{}", daemon.log());
}

/// `--daemon --rekey`: each renewal is a rekey (here asked for by SIGHUP): a new key every
/// time, the files switched together in the versioned layout, and a reader of that layout
/// never finds a broken file or a mismatched pair.
#[test]
fn daemon_with_rekey_gets_a_new_key_each_time_and_switches_both_files() {
    let s = Scratch::with_ca(&[]);
    let gw = ca_serve(&s, &[]);
    request(&s, &gw, "svc", &["--hours", "1"]);
    let reader = pair_reader(&s, "svc");
    let mut daemon = Daemon::start(&s, &gw, "svc", &["--rekey"], "rekey.log");
    let mut keys = vec![public_key(&s, "svc.key", false)];
    for round in 1..=3 {
        daemon.signal("HUP");
        let log = daemon.wait_for("rekeyed svc serial", round, Duration::from_secs(10));
        let key = public_key(&s, "svc.key", false);
        assert!(!keys.contains(&key), "round {round}: not a new key: {log}");
        assert_eq!(public_key(&s, "svc.crt", true), key);
        keys.push(key);
    }
    let link = std::fs::read_link(s.path("svc.crt")).unwrap();
    assert_eq!(link, PathBuf::from(".svc.data/svc.crt"));
    assert_eq!(std::fs::read_dir(s.path(".svc.versions")).unwrap().count(), 2);
    daemon.signal("TERM");
    assert_eq!(daemon.exit(Duration::from_secs(10)).code(), Some(0), "{}", daemon.log());
    let seen = pair_reader_result(&s, "svc", reader);
    assert_eq!(seen["failures"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["serials"].as_array().unwrap().len(), 4, "{seen}");
}
