//! Flag values with a fixed set of choices, each listed with what it means in `--help`.

use certgate_pki::keys::KeyType;
use certgate_pki::profile::Profile;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

/// `--key-type`: the key types, with when to choose each.
pub fn key_type() -> impl TypedValueParser<Value = KeyType> {
    PossibleValuesParser::new(KeyType::ALL.map(|k| {
        PossibleValue::new(k.as_str()).help(match k {
            KeyType::EcP256 => "ECDSA P-256: small and fast; every TLS client and browser takes it",
            KeyType::EcP384 => "ECDSA P-384: for policies that ask for 192-bit security (CNSA)",
            KeyType::Ed25519 => {
                "Ed25519: small and fast; browsers and Windows cannot use it (docs/pki.md)"
            }
            KeyType::Rsa2048 => "RSA 2048 bits: for old clients and devices that know only RSA",
            KeyType::Rsa3072 => "RSA 3072 bits: RSA with 128-bit security",
            KeyType::Rsa4096 => "RSA 4096 bits: slowest to make and to sign with",
        })
    }))
    .try_map(|s| s.parse::<KeyType>())
}

/// `--profile`: what a certificate may be used for.
pub fn profile() -> impl TypedValueParser<Value = Profile> {
    PossibleValuesParser::new([
        PossibleValue::new("server")
            .help("TLS server (serverAuth): a gateway listener, a web server; DNS and IP SANs"),
        PossibleValue::new("client").help(
            "TLS client (clientAuth): a user, device or service calling in; URI (SPIFFE) and \
             email SANs, or none (identified by its subject)",
        ),
        PossibleValue::new("dual").help(
            "both serverAuth and clientAuth: a service that serves and calls with one certificate",
        ),
    ])
    .try_map(|s| s.parse::<Profile>())
}

/// `--signal`: the signals a server may take as "reload your certificate" (`HUP` and
/// `SIGHUP` are read too).
pub fn signal() -> impl TypedValueParser<Value = super::renew_daemon::Signal> {
    use super::renew_daemon::Signal;
    PossibleValuesParser::new(Signal::ALL.map(|s| {
        PossibleValue::new(s.as_str()).aliases([s.as_str().to_ascii_uppercase(), s.name()]).help(
            match s {
                Signal::Hup => "SIGHUP: reload (nginx, haproxy, certgate serve, most daemons)",
                Signal::Usr1 => "SIGUSR1",
                Signal::Usr2 => "SIGUSR2 (e.g. haproxy's master-worker reload)",
                Signal::Term => "SIGTERM: stop (for a supervisor that restarts it)",
                Signal::Int => "SIGINT",
                Signal::Quit => "SIGQUIT",
            },
        )
    }))
    .try_map(|s| {
        super::renew_daemon::Signal::parse(&s).ok_or_else(|| format!("unknown signal {s:?}"))
    })
}
