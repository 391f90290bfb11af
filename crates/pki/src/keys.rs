//! Key pairs: the key types certgate issues, PEM files in every common format, and CA keys
//! stored encrypted as PKCS#8 (PBES2: PBKDF2-HMAC-SHA256 + AES-256-CBC, which
//! `openssl pkey -passin` reads). The crypto runs on aws-lc-rs; the `pkcs8` crate only encodes.
//!
//! Every key certgate writes, and every key it puts in a PKCS#12 file, is PKCS#8 version 1
//! (RFC 5208, no public key inside). aws-lc generates Ed25519 keys as version 2 (RFC 5958, with
//! the public key), which OpenSSL 3.0 (`openssl pkey`, `openssl pkcs12`, curl, nginx), Python's
//! ssl and cryptography, and Node cannot read; [`pkcs8_v1`] turns those into version 1.

use std::fmt;
use std::num::NonZeroU32;
use std::path::Path;
use std::str::FromStr;

use aws_lc_rs::cipher::{
    AES_128, AES_256, DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey,
    PaddedBlockEncryptingKey, UnboundCipherKey,
};
use pkcs8::der::{Decode, Encode};
use pkcs8::pkcs5::{self, pbes2};
use rcgen::KeyPair;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::PkiError;

/// PBKDF2 iterations for encrypted CA keys (OWASP's 2023 figure for HMAC-SHA256).
const PBKDF2_ITERATIONS: u32 = 600_000;

/// The key types certgate can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    #[default]
    EcP256,
    EcP384,
    Ed25519,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl KeyType {
    pub const ALL: [KeyType; 6] = [
        KeyType::EcP256,
        KeyType::EcP384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcP256 => "ec-p256",
            KeyType::EcP384 => "ec-p384",
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    /// Generates a fresh key pair of this type, held (and serialized) as PKCS#8 version 1.
    pub fn generate(self) -> Result<KeyPair, PkiError> {
        let rsa = |size| KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size);
        Ok(match self {
            KeyType::EcP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
            KeyType::EcP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?,
            KeyType::Ed25519 => {
                // rcgen keeps the PKCS#8 it generated (version 2 for Ed25519) and serializes
                // exactly that; reloading from version 1 makes every later write version 1.
                let v2 = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
                let v1 = pkcs8_v1(&v2.serialize_der())
                    .map_err(|_| PkiError::Crypto { what: "encoding the Ed25519 key" })?;
                KeyPair::try_from(v1.as_slice())?
            }
            KeyType::Rsa2048 => rsa(rcgen::RsaKeySize::_2048)?,
            KeyType::Rsa3072 => rsa(rcgen::RsaKeySize::_3072)?,
            KeyType::Rsa4096 => rsa(rcgen::RsaKeySize::_4096)?,
        })
    }

    /// Whether keys of this type are RSA (they also get keyEncipherment on servers).
    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096)
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, PkiError> {
        KeyType::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| PkiError::KeyType {
            key_type: s.to_string(),
            reason: "unknown; choose ec-p256, ec-p384, ed25519, rsa-2048, rsa-3072 or rsa-4096",
        })
    }
}

/// A key pair's private key as unencrypted PKCS#8 PEM.
pub fn to_pem(key: &KeyPair) -> String {
    crate::pem::encode("PRIVATE KEY", &key.serialize_der())
}

/// A key pair's private key as PKCS#8 PEM encrypted under `password`.
pub fn to_encrypted_pem(key: &KeyPair, password: &[u8]) -> Result<String, PkiError> {
    let crypto = |_| PkiError::Crypto { what: "encrypting the private key" };
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(crypto)?;
    aws_lc_rs::rand::fill(&mut iv).map_err(crypto)?;
    let mut derived = [0u8; 32];
    aws_lc_rs::pbkdf2::derive(
        aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::MIN.saturating_add(PBKDF2_ITERATIONS - 1),
        &salt,
        password,
        &mut derived,
    );
    let cipher = UnboundCipherKey::new(&AES_256, &derived).map_err(crypto)?;
    let cipher = PaddedBlockEncryptingKey::cbc_pkcs7(cipher).map_err(crypto)?;
    let mut data = key.serialize_der();
    cipher.less_safe_encrypt(&mut data, EncryptionContext::Iv128(iv.into())).map_err(crypto)?;
    let params = pbes2::Parameters::pbkdf2_sha256_aes256cbc(PBKDF2_ITERATIONS, &salt, &iv)
        .map_err(|_| PkiError::Crypto { what: "encoding PBES2 parameters" })?;
    let info = pkcs8::EncryptedPrivateKeyInfo {
        encryption_algorithm: pkcs5::EncryptionScheme::Pbes2(params),
        encrypted_data: &data,
    };
    let der = info.to_der().map_err(|_| PkiError::Crypto { what: "encoding the key" })?;
    Ok(crate::pem::encode("ENCRYPTED PRIVATE KEY", &der))
}

/// Whether the PEM file content holds an encrypted private key.
pub fn is_encrypted(pem: &[u8]) -> bool {
    crate::pem::first_label(pem).as_deref() == Some("ENCRYPTED PRIVATE KEY")
}

/// Whether `key` is the private key of the certificate `cert_der` (false for a certificate
/// that does not parse).
pub fn matches_cert(key: &KeyPair, cert_der: &[u8]) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(cert_der).is_ok_and(|(_, cert)| {
        cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
    })
}

/// Loads a private key from a PEM file: PKCS#8, SEC1 (`EC PRIVATE KEY`), PKCS#1
/// (`RSA PRIVATE KEY`), or encrypted PKCS#8 when `password` is given.
pub fn load(path: &Path, password: Option<&[u8]>) -> Result<KeyPair, PkiError> {
    let bytes = crate::fs::read(path)?;
    let pkcs8 = pkcs8_der_from_pem(path, &bytes, password)?;
    KeyPair::try_from(pkcs8.as_slice())
        .map_err(|e| PkiError::bad_file(path, format!("not a usable private key: {e}")))
}

/// The PKCS#8 DER of the private key in a PEM file, converting SEC1 and PKCS#1 and decrypting
/// encrypted PKCS#8. PKCS#12 needs PKCS#8, whatever the user's key file held.
pub fn pkcs8_der_from_pem(
    path: &Path,
    bytes: &[u8],
    password: Option<&[u8]>,
) -> Result<Vec<u8>, PkiError> {
    if is_encrypted(bytes) {
        let password = password.ok_or_else(|| PkiError::PasswordNeeded { path: path.into() })?;
        return decrypt_pem(path, bytes, password);
    }
    let key = PrivateKeyDer::from_pem_slice(bytes).map_err(|e| {
        let reason = match crate::pem::first_label(bytes) {
            Some(label) if !label.contains("PRIVATE KEY") => {
                format!("expected a private key, found a '{label}' PEM block")
            }
            _ if bytes.iter().all(u8::is_ascii_whitespace) => "the file is empty".to_string(),
            _ => format!("no readable private key ({e:?})"),
        };
        PkiError::bad_file(path, reason)
    })?;
    let bad = |what: &str| PkiError::bad_file(path, format!("cannot read the {what} key"));
    match key {
        PrivateKeyDer::Pkcs8(k) => pkcs8_v1(k.secret_pkcs8_der())
            .map_err(|_| PkiError::bad_file(path, "the PKCS#8 private key is malformed")),
        PrivateKeyDer::Sec1(k) => {
            let der = k.secret_sec1_der();
            for alg in [
                &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            ] {
                if let Ok(kp) = aws_lc_rs::signature::EcdsaKeyPair::from_private_key_der(alg, der) {
                    return kp.to_pkcs8v1().map(|d| d.as_ref().to_vec()).map_err(|_| bad("EC"));
                }
            }
            Err(bad("EC (only P-256 and P-384 are supported)"))
        }
        PrivateKeyDer::Pkcs1(k) => {
            use aws_lc_rs::encoding::AsDer;
            let kp =
                aws_lc_rs::rsa::KeyPair::from_der(k.secret_pkcs1_der()).map_err(|_| bad("RSA"))?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> = kp.as_der().map_err(|_| bad("RSA"))?;
            Ok(der.as_ref().to_vec())
        }
        _ => Err(bad("unsupported")),
    }
}

fn decrypt_pem(path: &Path, bytes: &[u8], password: &[u8]) -> Result<Vec<u8>, PkiError> {
    let bad = |reason: &str| PkiError::bad_file(path, reason.to_string());
    let der = crate::pem::decode_block_any(bytes, "ENCRYPTED PRIVATE KEY").map_err(|r| bad(&r))?;
    let info = pkcs8::EncryptedPrivateKeyInfo::from_der(&der)
        .map_err(|_| bad("the encrypted private key is malformed"))?;
    let pkcs5::EncryptionScheme::Pbes2(params) = info.encryption_algorithm else {
        return Err(bad("the key uses PBES1 encryption; re-encrypt it with PBES2 (AES)"));
    };
    let pbes2::Kdf::Pbkdf2(kdf) = &params.kdf else {
        return Err(bad("the key uses scrypt; certgate reads PBKDF2-encrypted keys"));
    };
    let prf = match kdf.prf {
        pbes2::Pbkdf2Prf::HmacWithSha256 => aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        pbes2::Pbkdf2Prf::HmacWithSha384 => aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA384,
        pbes2::Pbkdf2Prf::HmacWithSha512 => aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA512,
        pbes2::Pbkdf2Prf::HmacWithSha1 => aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA1,
        pbes2::Pbkdf2Prf::HmacWithSha224 => {
            return Err(bad("the key uses PBKDF2 with HMAC-SHA224, which is not supported"));
        }
        _ => return Err(bad("the key uses an unknown PBKDF2 hash")),
    };
    let (alg, iv, key_len) = match params.encryption {
        pbes2::EncryptionScheme::Aes128Cbc { iv } => (&AES_128, iv, 16),
        pbes2::EncryptionScheme::Aes256Cbc { iv } => (&AES_256, iv, 32),
        _ => return Err(bad("the key is encrypted with a cipher other than AES-128/256-CBC")),
    };
    let iterations = NonZeroU32::new(kdf.iteration_count)
        .ok_or_else(|| bad("the key's PBKDF2 iteration count is zero"))?;
    let mut derived = vec![0u8; key_len];
    aws_lc_rs::pbkdf2::derive(prf, iterations, kdf.salt, password, &mut derived);
    let wrong = || PkiError::WrongPassword { path: path.to_path_buf() };
    let cipher = UnboundCipherKey::new(alg, &derived).map_err(|_| wrong())?;
    let cipher = PaddedBlockDecryptingKey::cbc_pkcs7(cipher).map_err(|_| wrong())?;
    let mut data = info.encrypted_data.to_vec();
    let plain =
        cipher.decrypt(&mut data, DecryptionContext::Iv128((*iv).into())).map_err(|_| wrong())?;
    // A wrong password yields valid padding about once in 256 tries; the PKCS#8 parse below
    // catches those.
    pkcs8_v1(plain).map_err(|_| wrong())
}

/// The PKCS#8 private key `der` as version 1 (RFC 5208): a version 2 key (RFC 5958, which
/// adds the public key) loses its public key field, which every reader can recompute; a
/// version 1 key is returned as it is. Fails when `der` is not PKCS#8.
pub fn pkcs8_v1(der: &[u8]) -> Result<Vec<u8>, pkcs8::Error> {
    let mut info = pkcs8::PrivateKeyInfo::from_der(der)?;
    if info.public_key.is_none() {
        return Ok(der.to_vec());
    }
    info.public_key = None;
    Ok(info.to_der()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An encrypted key reads back with its password and is refused with a wrong one.
    #[test]
    fn encrypted_key_round_trip_and_wrong_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.key");
        let key = KeyType::EcP256.generate().unwrap();
        std::fs::write(&path, to_encrypted_pem(&key, b"correct horse").unwrap()).unwrap();
        let loaded = load(&path, Some(b"correct horse")).unwrap();
        assert_eq!(loaded.public_key_raw(), key.public_key_raw());
        assert!(matches!(load(&path, Some(b"wrong")), Err(PkiError::WrongPassword { .. })));
        assert!(matches!(load(&path, None), Err(PkiError::PasswordNeeded { .. })));
    }

    /// Every supported key type generates, is written as PKCS#8 version 1 (plain and
    /// encrypted), and reloads from its PEM.
    #[test]
    fn every_key_type_generates_as_pkcs8_v1_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        for kt in [KeyType::EcP256, KeyType::EcP384, KeyType::Ed25519, KeyType::Rsa2048] {
            let path = dir.path().join(format!("{kt}.key"));
            let key = kt.generate().unwrap();
            let info_der = key.serialize_der();
            let info = pkcs8::PrivateKeyInfo::from_der(&info_der).unwrap();
            assert_eq!(info.version(), pkcs8::Version::V1, "{kt}");
            std::fs::write(&path, to_pem(&key)).unwrap();
            let loaded = load(&path, None).unwrap();
            assert_eq!(loaded.public_key_raw(), key.public_key_raw(), "{kt}");
            std::fs::write(&path, to_encrypted_pem(&key, b"pw").unwrap()).unwrap();
            let der = pkcs8_der_from_pem(&path, &std::fs::read(&path).unwrap(), Some(b"pw"));
            assert_eq!(der.unwrap(), info_der, "{kt}");
        }
        assert!("dsa-1024".parse::<KeyType>().is_err());
    }

    /// A version 2 key (with its public key, as aws-lc and older certgate wrote Ed25519 keys)
    /// is read as the same key in version 1.
    #[test]
    fn pkcs8_v2_key_is_read_as_v1() {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let v2 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let info = pkcs8::PrivateKeyInfo::from_der(v2.as_ref()).unwrap();
        assert_eq!(info.version(), pkcs8::Version::V2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.key");
        let pem = crate::pem::encode("PRIVATE KEY", v2.as_ref());
        let v1 = pkcs8_der_from_pem(&path, pem.as_bytes(), None).unwrap();
        let read = pkcs8::PrivateKeyInfo::from_der(&v1).unwrap();
        assert_eq!((read.version(), read.private_key), (pkcs8::Version::V1, info.private_key));
        assert_eq!(pkcs8_v1(&v1).unwrap(), v1, "version 1 is kept as it is");
    }
}
