//! PKCS#12 bundles (key + certificate + chain) for browsers, phones, curl and Java.
//!
//! The default encryption is PBES2 (AES-256-CBC, PBKDF2-HMAC-SHA256) with an HMAC-SHA256 MAC,
//! which current browsers, macOS/iOS 17+, Java 11+ and OpenSSL 3 import. `legacy` writes
//! 3DES + HMAC-SHA1, which older Windows, macOS and iOS importers need (OpenSSL 3 reads it with
//! `-legacy`).

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::PkiError;

/// Iterations for legacy files: what OpenSSL's own legacy export uses.
const LEGACY_ITERATIONS: u32 = 2048;

/// Builds a PKCS#12 file.
///
/// `chain` is the leaf followed by its issuers (the root may be included at the end);
/// `key_pkcs8` is the leaf's private key as PKCS#8 DER and must belong to the leaf.
pub fn export(
    chain: &[CertificateDer<'_>],
    key_pkcs8: &[u8],
    password: &str,
    legacy: bool,
    friendly_name: &str,
) -> Result<Vec<u8>, PkiError> {
    let fail = |reason: String| PkiError::Pkcs12 { reason };
    let leaf = chain.first().ok_or_else(|| fail("no certificate to export".into()))?;
    check_key_matches(leaf, key_pkcs8)?;
    let key = PrivateKey::from_der(key_pkcs8).map_err(|e| fail(format!("private key: {e}")))?;
    let certs = chain
        .iter()
        .map(|c| Certificate::from_der(c).map_err(|e| fail(format!("certificate: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf);
    let entry = PrivateKeyChain::new(digest.as_ref(), key, certs);
    let mut store = KeyStore::new();
    store.add_entry(friendly_name, KeyStoreEntry::PrivateKeyChain(entry));
    let writer = store.writer(password);
    let writer = if legacy {
        writer
            .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
            .encryption_iterations(LEGACY_ITERATIONS)
            .mac_algorithm(MacAlgorithm::HmacSha1)
            .mac_iterations(LEGACY_ITERATIONS)
    } else {
        writer
    };
    writer.write().map_err(|e| fail(e.to_string()))
}

/// Refuses to bundle a key with a certificate it does not belong to (a bundle browsers would
/// import and then fail with in every handshake).
fn check_key_matches(leaf: &[u8], key_pkcs8: &[u8]) -> Result<(), PkiError> {
    let key = rcgen::KeyPair::try_from(key_pkcs8)
        .map_err(|e| PkiError::Pkcs12 { reason: format!("unusable private key: {e}") })?;
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|e| PkiError::Pkcs12 { reason: format!("certificate: {e}") })?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(PkiError::KeyMismatch { path: "<key file>".into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::TestPki;
    use p12_keystore::Pkcs12ImportPolicy;

    /// Both forms read back with the password and carry the key and the whole chain.
    #[test]
    fn modern_and_legacy_read_back() {
        let pki = TestPki::new();
        let leaf = pki.client("joe", &[]);
        let key = leaf.key_der();
        let key_der = key.secret_der();
        for legacy in [false, true] {
            let der = export(&leaf.chain_der(), key_der, "pw", legacy, "joe").unwrap();
            let ks = KeyStore::from_pkcs12(&der, "pw", Pkcs12ImportPolicy::Strict).unwrap();
            let (alias, chain) = ks.private_key_chain().unwrap();
            assert_eq!(alias, "joe");
            assert_eq!(chain.certs().len(), 2);
            assert!(KeyStore::from_pkcs12(&der, "wrong", Pkcs12ImportPolicy::Strict).is_err());
        }
    }

    /// A key from another certificate is refused.
    #[test]
    fn mismatched_key_is_refused() {
        let pki = TestPki::new();
        let a = pki.client("a", &[]);
        let b = pki.client("b", &[]);
        let err = export(&a.chain_der(), b.key_der().secret_der(), "pw", false, "a").unwrap_err();
        assert!(matches!(err, PkiError::KeyMismatch { .. }), "{err}");
    }
}
