//! End-to-end tests of what users type when they follow the openssl and step tutorials with
//! certgate: profiles chosen from the SANs, subjects, root constraints, output file names and
//! re-issuing a name. The real `certgate` binary, checked by `openssl`.

// A test that cannot set itself up should fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pki_support;

use pki_support::*;

/// `openssl x509 -noout` with `args` on `cert`, as text.
fn x509(s: &Scratch, cert: &str, args: &[&str]) -> String {
    let mut all = vec!["x509", "-in", cert, "-noout"];
    all.extend_from_slice(args);
    let out = s.openssl(&all);
    assert!(out.status.success(), "openssl x509 {args:?} {cert}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new key and CSR made by `openssl req` with `subj` and optional extra arguments.
fn openssl_csr(s: &Scratch, name: &str, subj: &str, extra: &[&str]) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let mut args = vec!["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    args.extend_from_slice(&["-nodes", "-keyout", &key, "-out", &csr, "-subj", subj]);
    args.extend_from_slice(extra);
    let out = s.openssl(&args);
    assert!(out.status.success(), "{}", text(&out));
}

/// URI and DNS SANs together without --profile are refused, naming the three choices, and
/// nothing is written or recorded; DNS with IP alone stays a server certificate.
#[test]
fn mixed_client_and_server_sans_need_a_profile() {
    let s = Scratch::with_ca(&[]);
    let err =
        s.fails(&["cert", "issue", "server", "--san", "spiffe://x/server", "--san", "localhost"]);
    assert!(
        err.contains("URI:spiffe://x/server")
            && err.contains("DNS:localhost")
            && err.contains("--profile server")
            && err.contains("--profile client")
            && err.contains("--profile dual"),
        "{err}"
    );
    assert!(!s.path("server.crt").exists() && !s.path("server.key").exists());
    assert!(s.fails(&["cert", "show", "server"]).contains("no certificate"));

    let out = s.ok(&["cert", "issue", "web", "--san", "localhost", "--san", "127.0.0.1"]);
    assert!(out.contains("(server certificate"), "{out}");
    assert!(openssl_verify(&s, "web.crt", "sslserver").status.success());

    let out = s.ok(&[
        "cert",
        "issue",
        "server",
        "--san",
        "spiffe://x/server",
        "--san",
        "localhost",
        "--profile",
        "dual",
    ]);
    assert!(out.contains("(dual certificate"), "{out}");
    let verify = |purpose: &str| {
        s.openssl(&[
            "verify",
            "-CAfile",
            "ca/root.crt",
            "-untrusted",
            "server.crt",
            "-purpose",
            purpose,
            "-verify_hostname",
            "localhost",
            "server.crt",
        ])
    };
    assert!(verify("sslserver").status.success(), "{}", text(&verify("sslserver")));
    assert!(verify("sslclient").status.success(), "{}", text(&verify("sslclient")));
}

/// Signing seed 004's client CSR (a CN that looks like a host name, no SANs) with
/// `--profile client` adds no DNS SAN from the CN; signed as a server it does, and says so.
#[test]
fn client_csr_gets_no_san_invented_from_its_cn() {
    let s = Scratch::with_ca(&["--no-intermediate"]);
    let subj =
        "/C=NL/ST=Noord-holland/L=Oegstgeest/O=Bytle/OU=Bytle/CN=foo/emailAddress=foo@bytle.test";
    openssl_csr(&s, "client", subj, &[]);
    let out = s.ok(&[
        "cert",
        "sign",
        "--csr",
        "client.csr",
        "--profile",
        "client",
        "--out",
        "client_certificate.pem",
    ]);
    assert!(!out.contains("DNS:foo"), "{out}");
    assert!(out.contains("SANs       (none)"), "{out}");
    let cert = x509(&s, "client_certificate.pem", &["-text"]);
    assert!(!cert.contains("Subject Alternative Name"), "{cert}");
    assert!(cert.contains("TLS Web Client Authentication"), "{cert}");
    assert_eq!(
        x509(&s, "client_certificate.pem", &["-subject"]).trim(),
        "subject=C = NL, ST = Noord-holland, L = Oegstgeest, O = Bytle, OU = Bytle, CN = foo, \
         emailAddress = foo@bytle.test",
        "the CSR's subject keeps its order"
    );
    let verify = s.openssl(&[
        "verify",
        "-CAfile",
        "ca/root.crt",
        "-purpose",
        "sslclient",
        "client_certificate.pem",
    ]);
    assert!(verify.status.success(), "{}", text(&verify));

    openssl_csr(&s, "svc", "/CN=svc.example.test", &[]);
    let out = s.ok(&["cert", "sign", "--csr", "svc.csr"]);
    assert!(
        out.contains(
            "note: no SAN requested; the CN svc.example.test was added as DNS:svc.example.test"
        ),
        "{out}"
    );
    assert!(x509(&s, "svc.crt", &["-ext", "subjectAltName"]).contains("DNS:svc.example.test"));
}

/// `--subject` in openssl's slash form and in the comma form `openssl x509 -subject` prints is
/// encoded in the order written; RFC 2253 output prints it reversed; NAME is the default CN.
#[test]
fn subjects_are_encoded_in_the_order_written() {
    let s = Scratch::with_ca(&["--subject", "/C=US/ST=State/O=YourOrg/CN=Internal-CA"]);
    assert_eq!(
        x509(&s, "ca/root.crt", &["-subject"]).trim(),
        "subject=C = US, ST = State, O = YourOrg, CN = Internal-CA"
    );
    assert_eq!(
        x509(&s, "ca/root.crt", &["-subject", "-nameopt", "RFC2253"]).trim(),
        "subject=CN=Internal-CA,O=YourOrg,ST=State,C=US"
    );
    assert_eq!(
        x509(&s, "ca/intermediate.crt", &["-subject"]).trim(),
        "subject=C = US, ST = State, O = YourOrg, CN = Internal-CA Intermediate CA"
    );

    s.ok(&[
        "cert",
        "issue",
        "bar",
        "--san",
        "bar.example.test",
        "--subject",
        "C=NL, O=Foo, CN=Bar",
    ]);
    assert_eq!(x509(&s, "bar.crt", &["-subject"]).trim(), "subject=C = NL, O = Foo, CN = Bar");
    assert!(openssl_verify(&s, "bar.crt", "sslserver").status.success());
    // What openssl printed is accepted back as written, prefix and all.
    let printed = x509(&s, "bar.crt", &["-subject"]);
    s.ok(&["cert", "issue", "bar2", "--san", "bar.example.test", "--subject", printed.trim()]);
    assert_eq!(x509(&s, "bar2.crt", &["-subject"]), printed);

    s.ok(&["cert", "issue", "api", "--san", "api.example.test", "--subject", "/O=Example"]);
    assert_eq!(x509(&s, "api.crt", &["-subject"]).trim(), "subject=O = Example, CN = api");
    s.ok(&[
        "cert",
        "issue",
        "esc",
        "--san",
        "esc.example.test",
        "--subject",
        r"O=Foo\, Inc., OU=a/b, CN=x",
    ]);
    assert_eq!(
        x509(&s, "esc.crt", &["-subject", "-nameopt", "RFC2253"]).trim(),
        r"subject=CN=x,OU=a/b,O=Foo\, Inc."
    );
    s.ok(&["cert", "issue", "slash", "--san", "s.example.test", "--subject", r"/O=a\/b/CN=y"]);
    assert_eq!(x509(&s, "slash.crt", &["-subject"]).trim(), "subject=O = a/b, CN = y");

    for (subject, reason) in [
        ("/XX=1/CN=a", "unknown attribute \"XX\""),
        ("/O=/CN=a", "O has an empty value"),
        ("C=Netherlands, CN=a", "two-letter country code"),
    ] {
        let err =
            s.fails(&["cert", "issue", "bad", "--san", "b.example.test", "--subject", subject]);
        assert!(err.contains("--subject") && err.contains(reason), "{subject}: {err}");
    }
    assert!(!s.path("bad.crt").exists() && !s.path("bad.key").exists());
}

/// Signs `name.csr` with the intermediate's key by openssl itself (outside certgate's checks)
/// into `name.crt`, followed by the intermediate, with the extensions in `ext`.
fn openssl_signed_leaf(s: &Scratch, name: &str, ext: &str) {
    std::fs::write(s.path(&format!("{name}.ext")), ext).unwrap();
    let (csr, crt, extfile) = (format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
    let out = s.openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca/intermediate.crt",
        "-CAkey",
        "ca/intermediate.key",
        "-days",
        "1",
        "-out",
        &crt,
        "-extfile",
        &extfile,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let mut chain = s.read(&crt);
    chain.extend(s.read("ca/intermediate.crt"));
    std::fs::write(s.path(&crt), chain).unwrap();
}

/// `ca init --permit-dns/--permit-ip` puts critical name constraints on the intermediate:
/// certgate issues only inside them, and a certificate made outside them (by openssl, with the
/// intermediate's key) is refused by `certgate verify` and by `openssl verify`, also when its
/// host-like CN is the only name. `--pathlen` sets the root's limit.
#[test]
fn certificates_outside_name_constraints_are_refused() {
    let s = Scratch::with_ca(&[
        "--permit-dns",
        "example.com",
        "--permit-ip",
        "10.0.0.0/8",
        "--pathlen",
        "1",
    ]);
    let nc = x509(&s, "ca/intermediate.crt", &["-ext", "nameConstraints"]);
    assert!(nc.contains("critical") && nc.contains("DNS:example.com"), "{nc}");
    assert!(nc.contains("IP:10.0.0.0/255.0.0.0"), "{nc}");
    assert!(x509(&s, "ca/root.crt", &["-ext", "basicConstraints"]).contains("CA:TRUE, pathlen:1"));

    s.ok(&["cert", "issue", "api", "--san", "api.example.com", "--san", "10.1.2.3"]);
    assert!(openssl_verify(&s, "api.crt", "sslserver").status.success());
    s.ok(&["verify", "api.crt", "--purpose", "server", "--name", "api.example.com"]);
    s.ok(&["cert", "issue", "joe", "--san", "spiffe://example.com/joe"]);
    assert!(openssl_verify(&s, "joe.crt", "sslclient").status.success());
    s.ok(&["verify", "joe.crt", "--purpose", "client"]);

    let err = s.fails(&["cert", "issue", "evil", "--san", "evil.test"]);
    assert!(err.contains("outside the name constraints") && err.contains("DNS:evil.test"), "{err}");
    assert!(!s.path("evil.crt").exists() && !s.path("evil.key").exists());

    openssl_csr(&s, "evil", "/CN=evil", &[]);
    openssl_signed_leaf(
        &s,
        "evil",
        "subjectAltName=DNS:evil.test\nextendedKeyUsage=serverAuth\n\
         keyUsage=critical,digitalSignature\n",
    );
    let out = s.run(&["verify", "evil.crt", "--purpose", "server"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let refused = text(&out);
    assert!(
        refused.contains("outside the name constraints of CN=certgate Intermediate CA")
            && refused.contains("DNS:evil.test")
            && refused.contains("permitted: DNS:example.com, IP:10.0.0.0/8"),
        "{refused}"
    );
    let openssl = openssl_verify(&s, "evil.crt", "sslserver");
    assert!(!openssl.status.success());
    assert!(text(&openssl).contains("permitted subtree violation"), "{}", text(&openssl));

    openssl_csr(&s, "hostcn", "/CN=x.evil.test", &[]);
    openssl_signed_leaf(
        &s,
        "hostcn",
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
    );
    let out = s.run(&["verify", "hostcn.crt", "--purpose", "client"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("CN=x.evil.test (a host name, no DNS SAN)"), "{}", text(&out));
    assert!(!openssl_verify(&s, "hostcn.crt", "sslclient").status.success());
}

/// Seed 004's single root with `pathlen:0` signs leaves directly; `--pathlen 0` with an
/// intermediate, and name constraints without one, are refused before anything is written.
#[test]
fn single_root_with_pathlen_zero_signs_leaves() {
    let s = Scratch::with_ca(&["--no-intermediate", "--pathlen", "0"]);
    let bc = x509(&s, "ca/root.crt", &["-ext", "basicConstraints"]);
    assert!(bc.contains("critical") && bc.contains("CA:TRUE, pathlen:0"), "{bc}");
    s.ok(&["cert", "issue", "client", "--san", "client@example.test"]);
    let verify =
        s.openssl(&["verify", "-CAfile", "ca/root.crt", "-purpose", "sslclient", "client.crt"]);
    assert!(verify.status.success(), "{}", text(&verify));

    let err = s.fails(&["ca", "init", "--ca-dir", "other", "--pathlen", "0"]);
    assert!(err.contains("--pathlen 0") && err.contains("--no-intermediate"), "{err}");
    let err = s.fails(&[
        "ca",
        "init",
        "--ca-dir",
        "other",
        "--no-intermediate",
        "--permit-dns",
        "example.com",
    ]);
    assert!(err.contains("go on the intermediate"), "{err}");
    let err = s.fails(&["ca", "init", "--ca-dir", "other", "--permit-ip", "10.0.0.1/8"]);
    assert!(err.contains("write 10.0.0.0/8"), "{err}");
    assert!(!s.path("other").exists());
}

/// `cert issue --cert-out/--key-out` writes where step users expect (key 0600, nothing
/// replaced without --force); `cert p12 --cert/--key` exports files with other names (seed
/// 004's `client_certificate.pem`); `ca root` prints or writes the trust anchor.
#[test]
fn output_and_input_file_names_can_be_chosen() {
    let s = Scratch::with_ca(&[]);
    let out = s.ok(&[
        "cert",
        "issue",
        "client",
        "--san",
        "spiffe://example.test/client",
        "--cert-out",
        "certs/client_certificate.pem",
        "--key-out",
        "keys/client_private_key.pem",
    ]);
    assert!(out.contains("certs/client_certificate.pem"), "{out}");
    assert!(!s.path("client.crt").exists() && !s.path("client.key").exists());
    assert_eq!(mode(&s.path("keys/client_private_key.pem")), 0o600);
    assert!(openssl_verify(&s, "certs/client_certificate.pem", "sslclient").status.success());
    let before = s.read("keys/client_private_key.pem");
    let err = s.fails(&[
        "cert",
        "issue",
        "client2",
        "--san",
        "spiffe://example.test/c2",
        "--key-out",
        "keys/client_private_key.pem",
    ]);
    assert!(err.contains("keys/client_private_key.pem") && err.contains("--force"), "{err}");
    assert_eq!(s.read("keys/client_private_key.pem"), before);
    assert!(!s.path("client2.crt").exists());

    // Seed 004: the key and CSR come from openssl, the certificate from `cert sign`.
    openssl_csr(&s, "foo", "/C=NL/O=Bytle/CN=foo", &[]);
    s.ok(&[
        "cert",
        "sign",
        "--csr",
        "foo.csr",
        "--profile",
        "client",
        "--out",
        "client_certificate.pem",
    ]);
    std::fs::write(s.path("p12.pass"), "a long passphrase\n").unwrap();
    let out = s.ok(&[
        "cert",
        "p12",
        "foo",
        "--cert",
        "client_certificate.pem",
        "--key",
        "foo.key",
        "--password-file",
        "p12.pass",
        "--out",
        "client_certificate.p12",
    ]);
    assert!(out.contains("including the root"), "{out}");
    let info = s.openssl(&[
        "pkcs12",
        "-in",
        "client_certificate.p12",
        "-passin",
        "file:p12.pass",
        "-nodes",
        "-info",
    ]);
    let info_text = text(&info);
    assert!(info.status.success(), "{info_text}");
    assert!(info_text.contains("subject=C = NL, O = Bytle, CN = foo"), "{info_text}");
    assert!(info_text.contains("PRIVATE KEY"), "{info_text}");
    let err = s.fails(&[
        "cert",
        "p12",
        "foo",
        "--cert",
        "client_certificate.pem",
        "--key",
        "keys/client_private_key.pem",
        "--password-file",
        "p12.pass",
        "--out",
        "mismatch.p12",
    ]);
    assert!(
        err.contains("keys/client_private_key.pem") && err.contains("does not belong"),
        "{err}"
    );

    assert_eq!(s.ok(&["ca", "root"]).as_bytes(), s.read("ca/root.crt").as_slice());
    let out = s.ok(&["ca", "root", "--out", "root_certificate.pem"]);
    assert!(out.contains("wrote root_certificate.pem (CN=certgate Root CA)"), "{out}");
    assert_eq!(s.read("root_certificate.pem"), s.read("ca/root.crt"));
    assert!(s.fails(&["ca", "root", "--out", "root_certificate.pem"]).contains("--force"));
    s.ok(&["ca", "root", "--out", "root_certificate.pem", "--force"]);
    let verify = s.openssl(&[
        "verify",
        "-CAfile",
        "root_certificate.pem",
        "-untrusted",
        "client_certificate.pem",
        "-purpose",
        "sslclient",
        "client_certificate.pem",
    ]);
    assert!(verify.status.success(), "{}", text(&verify));
}

/// Serials of the certificates named `name` with `status`, from `cert list --json`.
fn serials(s: &Scratch, name: &str, status: &str) -> Vec<String> {
    let json: serde_json::Value = serde_json::from_str(&s.ok(&["cert", "list", "--json"])).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"] == name && r["status"] == status)
        .map(|r| r["serial"].as_str().unwrap().to_string())
        .collect()
}

/// `cert renew NAME` in the README's order replaces NAME.crt and NAME.key because they hold
/// the certificate it renews; `cert issue NAME --force` supersedes the earlier certificate,
/// so a name has one current certificate; renewing a superseded or revoked one says so.
#[test]
fn reissue_supersedes_and_renew_replaces_only_its_own_files() {
    let s = Scratch::with_ca(&[]);
    s.ok(&["cert", "issue", "api", "--san", "api.example.com"]);
    let (crt1, key1) = (s.read("api.crt"), s.read("api.key"));
    let first = serials(&s, "api", "valid");
    let out = s.ok(&["cert", "renew", "api"]);
    assert!(out.contains(&format!("replaces   serial {}", first[0])), "{out}");
    assert_ne!(s.read("api.crt"), crt1);
    assert_ne!(s.read("api.key"), key1);
    assert_eq!(mode(&s.path("api.key")), 0o600);
    assert!(openssl_verify(&s, "api.crt", "sslserver").status.success());
    let key_pub = text(&s.openssl(&["pkey", "-in", "api.key", "-pubout"]));
    assert_eq!(key_pub, x509(&s, "api.crt", &["-pubkey"]), "the new key belongs to the new cert");
    assert_eq!(serials(&s, "api", "superseded"), first);

    let renewed = serials(&s, "api", "valid");
    let out = s.ok(&["cert", "issue", "api", "--san", "api.example.com", "--force"]);
    assert!(out.contains(&format!("replaces   serial {} (now superseded", renewed[0])), "{out}");
    let current = serials(&s, "api", "valid");
    assert_eq!(current.len(), 1, "one current certificate per name");
    assert!(s.ok(&["cert", "show", "api"]).contains(&current[0]));
    assert_eq!(serials(&s, "api", "superseded").len(), 2);

    let err = s.fails(&["cert", "renew", &first[0]]);
    assert!(err.contains("already renewed") && !err.contains("invalid name"), "{err}");
    let out = s.ok(&["cert", "revoke", "api"]);
    assert!(out.contains(&format!("serial {}", current[0])), "{out}");
    assert!(out.contains(&format!("earlier certificate of api, serial {}", renewed[0])), "{out}");
    let err = s.fails(&["cert", "renew", "api"]);
    assert!(
        err.contains("is revoked and cannot be renewed") && !err.contains("invalid name"),
        "{err}"
    );

    // A file renew did not write stays, unless --force.
    s.ok(&["cert", "issue", "web", "--san", "web.example.com", "--out-dir", "w"]);
    let web_key = s.read("w/web.key");
    std::fs::write(s.path("w/web.crt"), s.read("api.crt")).unwrap();
    let err = s.fails(&["cert", "renew", "web", "--out-dir", "w"]);
    assert!(err.contains("w/web.crt does not hold the certificate being renewed"), "{err}");
    assert_eq!(s.read("w/web.crt"), s.read("api.crt"));
    s.ok(&["cert", "renew", "web", "--out-dir", "w", "--force"]);
    std::fs::write(s.path("w/web.key"), s.read("api.key")).unwrap();
    let err = s.fails(&["cert", "renew", "web", "--out-dir", "w"]);
    assert!(err.contains("w/web.key does not hold the private key"), "{err}");
    assert_eq!(s.read("w/web.key"), s.read("api.key"));
    assert_ne!(s.read("w/web.key"), web_key);
    std::fs::remove_file(s.path("w/web.key")).unwrap();
    s.ok(&["cert", "renew", "web", "--out-dir", "w"]);
    let key = s.read("w/web.key");
    s.ok(&["cert", "renew", "web", "--out-dir", "w", "--reuse-key"]);
    assert_eq!(s.read("w/web.key"), key, "--reuse-key leaves the key alone");
    let key_pub = text(&s.openssl(&["pkey", "-in", "w/web.key", "-pubout"]));
    assert_eq!(key_pub, x509(&s, "w/web.crt", &["-pubkey"]));
    no_temp_files(&s.path("w"));
}

/// The examples printed by `--help` for the commands with new flags run as printed.
#[test]
fn help_examples_run_as_printed() {
    let s = Scratch::new();
    let examples = help_examples(&s, &["ca", "init"]);
    assert!(examples.len() >= 4, "{examples:?}");
    for example in examples {
        let fresh = Scratch::new();
        let args: Vec<&str> = example.iter().map(String::as_str).collect();
        fresh.ok(&args);
    }
    let s = Scratch::with_ca(&[]);
    let examples = help_examples(&s, &["cert", "issue"]);
    assert!(examples.len() >= 5, "{examples:?}");
    for example in examples {
        let args: Vec<&str> = example.iter().map(String::as_str).collect();
        s.ok(&args);
    }
    // `ca root`'s examples redirect or write outside the scratch directory: only their
    // command and flags are run here.
    let root = help_examples(&s, &["ca", "root"]);
    assert!(root.iter().all(|e| e[..2] == ["ca", "root"]), "{root:?}");
    assert!(root.iter().any(|e| e[2] == "--out"), "{root:?}");
    s.ok(&["ca", "root", "--out", "root_certificate.pem"]);
    // Those renewing with the online CA (--ca-url) run against `ca serve` in ca_serve_e2e.
    let renew = help_examples(&s, &["cert", "renew"]);
    assert!(renew.iter().any(|e| e.contains(&"--ca-url".to_string())), "{renew:?}");
    for example in renew.iter().filter(|e| !e.contains(&"--ca-url".to_string())) {
        let args: Vec<&str> = example.iter().map(String::as_str).collect();
        s.ok(&args);
    }
}

/// The subcommands listed in the "Commands:" section of `certgate ARGS --help`, as paths.
fn subcommands(s: &Scratch, args: &[&str]) -> Vec<Vec<String>> {
    let mut all = args.to_vec();
    all.push("--help");
    let help = s.ok(&all);
    let Some(commands) = help.split("Commands:\n").nth(1) else { return Vec::new() };
    let mut paths = Vec::new();
    for line in commands.lines().take_while(|l| l.starts_with("  ")) {
        let name = line.split_whitespace().next().unwrap();
        if name == "help" {
            continue;
        }
        let mut path: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        path.push(name.to_string());
        let child: Vec<&str> = path.iter().map(String::as_str).collect();
        let nested = subcommands(s, &child);
        paths.push(path);
        paths.extend(nested);
    }
    paths
}

/// Every subcommand's `--help` (and the top level's) ends with examples of that command whose
/// flags all exist; those that need no server or network run as printed.
#[test]
fn every_subcommand_help_has_examples_that_run() {
    let s = Scratch::with_ca(&[]);
    // --key-type and --profile list their values with what each means.
    for args in [&["ca", "init", "--help"][..], &["cert", "issue", "--help"]] {
        let help = s.ok(args);
        for key_type in ["ec-p256", "ec-p384", "ed25519", "rsa-2048", "rsa-3072", "rsa-4096"] {
            assert!(help.contains(&format!("- {key_type}: ")), "{args:?}: {key_type}: {help}");
        }
        assert!(help.contains("browsers and Windows cannot use it"), "{help}");
    }
    for args in [&["cert", "issue", "--help"][..], &["cert", "sign", "--help"]] {
        let help = s.ok(args);
        for profile in ["- server: TLS server", "- client: TLS client", "- dual: "] {
            assert!(help.contains(profile), "{args:?}: {profile}: {help}");
        }
    }
    let err = s.fails(&["cert", "issue", "x", "--profile", "both"]);
    assert!(err.contains("[possible values: server, client, dual]"), "{err}");
    let paths = subcommands(&s, &[]);
    for expected in [&["verify"][..], &["inspect"], &["serve"], &["quickstart"], &["crl"]] {
        assert!(paths.iter().any(|p| p == expected), "{expected:?} not in {paths:?}");
    }
    assert!(paths.iter().any(|p| p == &["cert", "revoke"]), "{paths:?}");
    let mut runnable = Vec::new();
    for path in std::iter::once(Vec::new()).chain(paths) {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let examples = help_examples(&s, &args);
        assert!(!examples.is_empty(), "certgate {args:?} --help has no example");
        for example in examples {
            // A shell redirection or pipe ends the command.
            let example: Vec<String> =
                example.into_iter().take_while(|w| w != ">" && w != "|").collect();
            if !path.is_empty() {
                assert!(example.starts_with(&path), "{path:?}: example {example:?}");
            }
            // The command the example runs, and its --help, which must know every flag used.
            let mut command: Vec<&str> = Vec::new();
            for word in &example {
                let mut probe = command.clone();
                probe.push(word);
                if word.starts_with('-') || !subcommands(&s, &command).iter().any(|p| *p == probe) {
                    break;
                }
                command = probe;
            }
            let mut help_args = command.clone();
            help_args.push("--help");
            let help = s.ok(&help_args);
            for flag in example.iter().filter(|w| w.starts_with("--")) {
                assert!(help.contains(&format!("{flag} ")), "{example:?}: {flag} is not in {help}");
            }
            if !path.is_empty() {
                runnable.push(example);
            }
        }
    }
    // The files the examples name.
    std::os::unix::fs::symlink("ca", s.path("certgate-ca")).unwrap();
    s.ok(&["cert", "issue", "joe", "--san", "spiffe://example.test/joe"]);
    s.ok(&["cert", "issue", "api", "--san", "api.example.com"]);
    s.ok(&["crl"]);
    std::fs::copy(s.path("joe.crt"), s.path("client.pem")).unwrap();
    std::fs::copy(s.path("ca/root.crt"), s.path("root_certificate.pem")).unwrap();
    let run_first = ["verify", "inspect", "list", "show"];
    runnable.sort_by_key(|e| !run_first.iter().any(|c| e.iter().take(2).any(|w| w == c)));
    let mut ran = 0;
    for example in runnable {
        let args: Vec<&str> = example.iter().map(String::as_str).collect();
        // Long-running, covered by their own tests: the gateway, the online CA (and its client)
        // and quickstart.
        // Examples that issue into the same names again, or write outside the scratch
        // directory, neither.
        let skip = matches!(args[0], "serve" | "quickstart") && !args.contains(&"--check")
            || matches!(args[..], ["ca", "serve", ..] | ["cert", "request" | "rekey", ..])
            || args.iter().any(|a| a.starts_with('/'))
            || matches!(
                args[..],
                ["cert", "issue" | "sign" | "p12" | "renew", ..] | ["ca", "init", ..]
            );
        if skip {
            continue;
        }
        if args[0] == "serve" {
            // `serve --check` on a missing configuration fails, naming it.
            let err = s.fails(&args);
            assert!(err.contains("certgate.toml"), "{err}");
        } else {
            s.ok(&args);
        }
        ran += 1;
    }
    assert!(ran >= 12, "only {ran} examples ran");
}

/// Under URI or email name constraints (which `ca init` does not offer, but another tool can
/// put on an intermediate), certgate's verifier fails closed: a URI SAN, or a subject
/// emailAddress, is refused, where OpenSSL evaluates URI constraints by host.
#[test]
fn uri_and_email_constraints_fail_closed() {
    let s = Scratch::with_ca(&["--no-intermediate"]);
    // An intermediate made by openssl under certgate's root, with URI and email subtrees.
    openssl_csr(&s, "int", "/CN=URI Intermediate", &[]);
    std::fs::write(
        s.path("int.ext"),
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n\
         nameConstraints=critical,permitted;URI:example.test,permitted;email:example.test\n",
    )
    .unwrap();
    let out = s.openssl(&[
        "x509",
        "-req",
        "-in",
        "int.csr",
        "-CA",
        "ca/root.crt",
        "-CAkey",
        "ca/root.key",
        "-days",
        "1",
        "-out",
        "int.crt",
        "-extfile",
        "int.ext",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let leaf = |name: &str, subj: &str, ext: &str| {
        openssl_csr(&s, name, subj, &[]);
        std::fs::write(s.path(&format!("{name}.ext")), ext).unwrap();
        let (csr, crt, extfile) =
            (format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
        let out = s.openssl(&[
            "x509", "-req", "-in", &csr, "-CA", "int.crt", "-CAkey", "int.key", "-days", "1",
            "-out", &crt, "-extfile", &extfile,
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let mut chain = s.read(&crt);
        chain.extend(s.read("int.crt"));
        std::fs::write(s.path(&crt), chain).unwrap();
    };
    let client = "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n";
    leaf("spiffe", "/CN=joe", &format!("{client}subjectAltName=URI:spiffe://example.test/joe\n"));
    leaf("mail", "/CN=ann/emailAddress=ann@example.test", client);
    leaf("plain", "/CN=bob", client);

    let openssl = |cert: &str| {
        s.openssl(&[
            "verify",
            "-CAfile",
            "ca/root.crt",
            "-untrusted",
            cert,
            "-purpose",
            "sslclient",
            cert,
        ])
    };
    assert!(openssl("spiffe.crt").status.success(), "{}", text(&openssl("spiffe.crt")));
    let out = s.run(&["verify", "spiffe.crt", "--purpose", "client"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("outside the name constraints of CN=URI Intermediate"),
        "{}",
        text(&out)
    );
    let out = s.run(&["verify", "mail.crt", "--purpose", "client"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("email constraints are not evaluated"), "{}", text(&out));
    // A certificate with no name of a constrained form passes both.
    s.ok(&["verify", "plain.crt", "--purpose", "client"]);
    assert!(openssl("plain.crt").status.success(), "{}", text(&openssl("plain.crt")));
}
