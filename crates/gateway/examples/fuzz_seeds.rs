//! Writes the seed inputs of the fuzz targets that certgate's own code can make: TestPki
//! certificates, CSRs and CRLs (PEM and DER), configurations, paths and identity-header
//! specs. Run by `fuzz/seeds.sh`, which adds the openssl-made and captured seeds.
//!
//! `cargo run -p certgate-gateway --features fuzz --example fuzz_seeds -- fuzz/seeds`
#![allow(clippy::unwrap_used, clippy::expect_used)] // a generator: any failure is fatal.

use std::path::{Path, PathBuf};

use certgate_pki::testkit::TestPki;
use rcgen::{CertificateParams, DnType, KeyPair, SanType, string::Ia5String};

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: fuzz_seeds <dir>"));
    let pki = TestPki::new();
    let two = TestPki::with_two_intermediates();
    let leaf = pki.client("joe", &["spiffe://example.test/joe", "joe@example.test"]);
    let server = pki.server(&["localhost", "127.0.0.1", "::1"]);

    // cert_load: single certificates and chains, PEM and DER.
    let dir = target(&out, "cert_load");
    write(&dir, "root.der", pki.root_der().as_ref());
    write(&dir, "root.pem", pki.root_pem().as_bytes());
    write(&dir, "leaf.der", leaf.der.as_ref());
    write(&dir, "chain.pem", leaf.chain_pem.as_bytes());
    write(&dir, "server-chain.pem", server.chain_pem.as_bytes());
    write(&dir, "two-intermediates.pem", two.client("x", &[]).chain_pem.as_bytes());
    write(&dir, "key.pem", leaf.key_pem.as_bytes());

    // crl_load: empty and non-empty CRLs from the leaves' issuer and from the root.
    let dir = target(&out, "crl_load");
    write(&dir, "empty.pem", pki.crl(&[]).as_bytes());
    write(&dir, "revoked.pem", pki.crl(&[&leaf]).as_bytes());
    write(&dir, "revoked.der", pki.crl_der(&[&leaf, &server]).as_ref());
    write(&dir, "root-crl.pem", pki.root_crl(true).as_bytes());

    // csr: requests with each kind of SAN, without SANs, and asking to be a CA.
    let dir = target(&out, "csr");
    let csrs: [(&str, Vec<SanType>, bool); 5] = [
        ("dns", vec![SanType::DnsName(ia5("svc.example.test"))], false),
        ("uri", vec![SanType::URI(ia5("spiffe://example.test/ns/a/sa/b"))], false),
        (
            "mixed",
            vec![
                SanType::Rfc822Name(ia5("joe@example.test")),
                SanType::IpAddress("10.0.0.1".parse().unwrap()),
                SanType::IpAddress("::1".parse().unwrap()),
            ],
            false,
        ),
        ("no-san", vec![], false),
        ("ca", vec![SanType::DnsName(ia5("ca.example.test"))], true),
    ];
    for (name, sans, ca) in csrs {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, format!("{name}.example.test"));
        params.distinguished_name.push(DnType::OrganizationName, "Example");
        params.subject_alt_names = sans;
        if ca {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let csr = params.serialize_request(&key).unwrap();
        write(&dir, &format!("{name}.pem"), csr.pem().unwrap().as_bytes());
        write(&dir, &format!("{name}.der"), csr.der());
    }

    // csr, as lines describing a well-signed CSR (see certgate_pki::fuzz::csr).
    for (i, lines) in [
        "Csvc\nDsvc.example.test\nUspiffe://example.test/svc",
        "Cjoe\nOExample\nEjoe@example.test\nI\x7f\x00\x00\x01",
        "Cx.example.test",
        "CCA\nDca.example.test\nX",
        "Dsvc.example.test\r\nUspiffe://x/a\";URI=spiffe://evil",
    ]
    .iter()
    .enumerate()
    {
        write(&dir, &format!("lines-{i}"), lines.as_bytes());
    }

    // config: the configurations of crates/certgate/tests/gateway_e2e.rs, built from the
    // same pieces, naming the files the fuzz target's directory holds.
    let dir = target(&out, "config");
    let listener = |mode: &str, extra: &str| {
        format!(
            "[[listener]]\nlisten = \"127.0.0.1:0\"\ncertificates = [{{ cert = \"server.crt\", \
             key = \"server.key\" }}]\n{extra}\n[listener.client_auth]\nmode = \"{mode}\"\n\
             trust = [\"root.crt\"]\n"
        )
    };
    let upstream = "\n[[upstream]]\nname = \"app\"\nurl = \"http://127.0.0.1:1\"\n";
    let configs = [
        ("required", format!("{}{upstream}\n[[route]]\nupstream = \"app\"\n", listener("required", ""))),
        (
            "optional-acl",
            format!(
                "{}{upstream}\n[[route]]\npath = \"/admin\"\nupstream = \"app\"\nidentity_headers = \"xfcc\"\n\
                 [route.allow]\nspiffe = [\"spiffe://example.test/*\"]\ncn = [\"joe\"]\n\n\
                 [[route]]\npath = \"/\"\nupstream = \"@echo\"\nclient_cert = \"optional\"\n",
                listener("optional", "")
            ),
        ),
        (
            "crl-limits",
            format!(
                "{}crls = [\"crl.pem\"]\nmax_chain_depth = 2\n\n[listener.limits]\n\
                 handshake_timeout = \"10s\"\nidle_timeout = \"2m\"\nbody_timeout = \"1h\"\n\
                 max_header_bytes = 16384\nmax_streams = 10\n{upstream}\n[[route]]\n\
                 upstream = \"app\"\nidentity_headers = \"rfc9440\"\n",
                listener("optional", "min_tls_version = \"1.3\"\ntrusted_proxies = [\"10.0.0.0/8\"]")
            ),
        ),
        (
            "https-upstream",
            format!(
                "{}\n[[upstream]]\nname = \"secure\"\nurl = \"https://127.0.0.1:1\"\n\
                 ca = [\"root.crt\"]\nserver_name = \"localhost\"\nclient_cert = \"client.crt\"\n\
                 client_key = \"client.key\"\nconnect_timeout = \"5s\"\n\n[[route]]\n\
                 path = \"/Secure\"\nupstream = \"secure\"\npath_ignore_case = true\n\
                 path_ignore_trailing_dots = true\n[route.header_names]\nsubject = \"SSL_Client\"\n",
                listener("dangerous_optional_no_ca", "")
            ),
        ),
        ("off", "[[listener]]\nlisten = \"[::1]:0\"\ncertificates = [{ cert = \"server.crt\", key = \"server.key\" }]\n\n[[route]]\nhost = \"*.example.test\"\nupstream = \"@echo\"\nclient_cert = \"optional\"\n\n[runtime]\nworker_threads = 2\n[access_log]\nenabled = false\n".into()),
    ];
    for (name, text) in configs {
        write(&dir, &format!("{name}.toml"), text.as_bytes());
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/example.certgate.toml");
    let example = std::fs::read_to_string(example).unwrap();
    write(&dir, "example.toml", example.as_bytes());
    write(&dir, "example-here.toml", example.replace("example-pki/", "").as_bytes());

    // path: what the path tests pin, and the routes of the fuzz table.
    let dir = target(&out, "path");
    for (i, p) in [
        "/",
        "/admin",
        "/admin/",
        "/api/v1",
        "/Admin2/x",
        "/ADMIN2. /x",
        "/%61dmin",
        "/admin;x=1",
        "/x/..;/admin",
        "//admin",
        "/public/../admin",
        "/a/./b/",
        "/a%3Bx/b",
        "/admin%2Fx",
        "/a%5cb",
        "/a%00",
        "/%252e%252e/admin",
        "/a/../../admin",
        "/%7euser/",
        "/api",
    ]
    .iter()
    .enumerate()
    {
        write(&dir, &format!("path-{i:02}"), p.as_bytes());
    }

    // identity_headers: byte strings the target's structure reader turns into certificates.
    let dir = target(&out, "identity_headers");
    write(&dir, "zeros", &[0; 64]);
    write(&dir, "ones", &[1; 128]);
    write(&dir, "ramp", &(0..=255).collect::<Vec<u8>>());
    write(&dir, "high", &[0xff; 256]);

    // A TestPki leaf with hostile subject values, for cert_load.
    let hostile = pki.leaf(certgate_pki::testkit::LeafSpec {
        cn: "a\"b\\c,d;e=f".into(),
        subject_o: Some("O, with \"quotes\"".into()),
        subject_ou: Some("é ünïcode".into()),
        ..certgate_pki::testkit::LeafSpec::client()
    });
    write(&target(&out, "cert_load"), "hostile-subject.der", hostile.der.as_ref());
}

fn ia5(s: &str) -> Ia5String {
    Ia5String::try_from(s).unwrap()
}

fn target(out: &Path, name: &str) -> PathBuf {
    let dir = out.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    std::fs::write(dir.join(name), data).unwrap();
}
