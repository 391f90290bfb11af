//! The deploy files in `deploy/` are checked as far as this machine allows.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gateway_support;

use std::collections::BTreeSet;
use std::process::Command;

use gateway_support::{CERTGATE, Gateway, curl, curl_as, dead_port, listener, pki_in};

fn deploy_file(name: &str) -> String {
    let path = format!("{}/../../deploy/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn promtool(args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian package prometheus; .ci/run installs it)");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The alert rules fire when they should, with the annotations they print, and not before:
/// `promtool test rules` on deploy/alerts.test.yaml (lifetimes from one hour to 90 days, 5xx
/// share, upstream errors, failing reloads, stale CRLs).
#[test]
fn alert_rules_pass_their_unit_tests() {
    let dir = format!("{}/../../deploy", env!("CARGO_MANIFEST_DIR"));
    let text = promtool(&["test", "rules", "alerts.test.yaml"], std::path::Path::new(&dir));
    assert!(text.contains("SUCCESS"), "{text}");
}

/// Every metric the alert rules and the Grafana dashboard query is one the gateway exports
/// (as read from a real scrape), and every dashboard query is valid PromQL (checked by
/// promtool as a recording rule, with the dashboard's variables filled in).
#[test]
fn dashboard_and_alerts_query_metrics_the_gateway_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = pki_in(dir);
    std::fs::write(dir.join("crl.pem"), pki.crl(&[])).unwrap();
    let (_held, dead) = dead_port();
    // Families appear once they have a series: a CRL, a reload, an upstream error.
    let config = format!(
        "{}crls = [\"crl.pem\"]\n\n[[upstream]]\nname = \"down\"\nurl = \"http://127.0.0.1:{dead}\"\n\
         \n[[route]]\nupstream = \"down\"\nclient_cert = \"optional\"\n\
         \n[admin]\nlisten = \"127.0.0.1:0\"\n",
        listener("optional", "")
    );
    let gw = Gateway::start_with_env(dir, &config, &[("CERTGATE_LOG", "info")]);
    assert_eq!(curl_as(&gw, None, "/", &[]).status, 502);
    let admin = gw.admin.unwrap();
    assert_eq!(curl(&["-X", "POST", &format!("http://{admin}/reload")]).status, 202);
    gw.wait_for_log("reloaded: serving generation 2", 1);
    let scrape = curl(&[&format!("http://{admin}/metrics")]);
    assert_eq!(scrape.status, 200);
    // The names a query may use: each family, and its samples' names.
    let mut exported = BTreeSet::new();
    for line in scrape.body.lines() {
        let mut words = line.split(' ');
        if let (Some("#"), Some("TYPE"), Some(family), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_count", "_sum"],
                _ => &[""],
            };
            exported.extend(suffixes.iter().map(|s| format!("{family}{s}")));
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy_file("grafana-dashboard.json")).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 15, "{exprs:?}");
    let alerts = deploy_file("alerts.yaml");
    let mut used = BTreeSet::new();
    for text in exprs.iter().map(String::as_str).chain([alerts.as_str()]) {
        let mut rest = text;
        while let Some(at) = rest.find("certgate_") {
            let name: String =
                rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            rest = &rest[at + name.len()..];
            used.insert(name);
        }
    }
    // Families that exist only with managed certificates or CRL URLs are checked against a
    // scrape in managed_e2e.rs (`alert_families`).
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| {
            !n.starts_with("certgate_certificate_renewal") && !n.starts_with("certgate_crl_fetches")
        })
        .filter(|n| !exported.contains(*n))
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\nexported: {exported:?}");
    for family in ["certgate_request_duration_seconds_bucket", "certgate_upstream_errors_total"] {
        assert!(used.contains(family), "the dashboard shows {family}");
    }

    let rules: String = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e.replace("$__rate_interval", "5m").replace("$listener", ".*");
            format!("      - record: dashboard:panel{i}\n        expr: {}\n", serde_json::json!(e))
        })
        .collect();
    let file = dir.join("dashboard-rules.yaml");
    std::fs::write(&file, format!("groups:\n  - name: dashboard\n    rules:\n{rules}")).unwrap();
    promtool(&["check", "rules", "dashboard-rules.yaml"], dir);
}

/// The systemd unit passes `systemd-analyze verify` (with ExecStart pointing at this build and
/// an existing user, since the check resolves both).
#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/certgate.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"), "reload is SIGHUP");
    let local = unit
        .replace("/usr/local/bin/certgate", CERTGATE)
        .replace("User=certgate", "User=root")
        .replace("Group=certgate", "Group=root");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("certgate.service");
    std::fs::write(&path, local).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The renewal template and its timer pass `systemd-analyze verify` for an instance; the
/// service is a oneshot `cert renew NAME --if-needed` for which exit 3 (nothing due) is a
/// success, and its command line names only flags `cert renew` has.
#[test]
fn renewal_timer_units_verify() {
    let service = deploy_file("certgate-renew@.service");
    let timer = deploy_file("certgate-renew@.timer");
    assert!(service.contains("Type=oneshot") && service.contains("SuccessExitStatus=3"));
    let exec = service.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    assert!(exec.contains("cert renew %i") && exec.contains("--if-needed"), "{exec}");
    let help = Command::new(CERTGATE).args(["cert", "renew", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in exec.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(help.contains(&format!("{flag} ")), "{flag} is not in {help}");
    }
    let dir = tempfile::tempdir().unwrap();
    let local = service
        .replace("/usr/local/bin/certgate", CERTGATE)
        .replace("User=certgate", "User=root")
        .replace("Group=certgate", "Group=root");
    std::fs::write(dir.path().join("certgate-renew@.service"), local).unwrap();
    std::fs::write(dir.path().join("certgate-renew@.timer"), timer).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("certgate-renew@api.service"))
        .arg(dir.path().join("certgate-renew@api.timer"))
        .output()
        .expect("systemd-analyze (Debian package systemd; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The renewal daemon's template passes `systemd-analyze verify` for an instance: a
/// long-running `cert renew NAME --daemon` (Type=simple, restarted on failure, reload =
/// SIGHUP = renew now) naming only flags `cert renew` has, sandboxed like certgate.service.
#[test]
fn renewal_daemon_unit_verifies() {
    let service = deploy_file("certgate-renew-daemon@.service");
    for line in ["Type=simple", "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID"] {
        assert!(service.lines().any(|l| l == line), "{line} missing");
    }
    let exec = service.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    assert!(exec.contains("cert renew %i") && exec.contains("--daemon"), "{exec}");
    let help = Command::new(CERTGATE).args(["cert", "renew", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in exec.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(help.contains(&format!("{flag} ")), "{flag} is not in {help}");
    }
    let gateway = deploy_file("certgate.service");
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "RestrictNamespaces=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
    ] {
        assert!(gateway.lines().any(|l| l == hardening), "{hardening} not in certgate.service");
        assert!(service.lines().any(|l| l == hardening), "{hardening} missing");
    }
    assert!(service.contains("ReadWritePaths=/etc/certgate/tls"));
    let dir = tempfile::tempdir().unwrap();
    let local = service
        .replace("/usr/local/bin/certgate", CERTGATE)
        .replace("User=certgate", "User=root")
        .replace("Group=certgate", "Group=root");
    std::fs::write(dir.path().join("certgate-renew-daemon@.service"), local).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("certgate-renew-daemon@api.service"))
        .output()
        .expect("systemd-analyze (Debian package systemd; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The configuration in the Kubernetes example passes `serve --check` once its Secret's files
/// exist (here written by the test PKI under the same names).
#[test]
fn kubernetes_example_config_checks() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/kubernetes.yaml"
    ))
    .unwrap();
    let toml: String = example
        .lines()
        .skip_while(|l| !l.contains("certgate.toml: |"))
        .skip(1)
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(toml.contains("[[listener]]") && toml.contains("[admin]"), "{toml}");
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let pki = certgate_pki::testkit::TestPki::new();
    pki.server(&["certgate.example"]).write(&tls, "tls");
    std::fs::write(tls.join("ca.crt"), pki.root_pem()).unwrap();
    std::fs::write(tls.join("crl.pem"), pki.crl(&[])).unwrap();
    let config = toml
        .replace("/etc/certgate/tls/", &format!("{}/", tls.display()))
        .replace("0.0.0.0:8443", "127.0.0.1:0");
    let path = dir.path().join("certgate.toml");
    std::fs::write(&path, config).unwrap();
    let out =
        Command::new(CERTGATE).args(["serve", "--check", "--config"]).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
