//! Remembers chains that verified, so a client that reconnects is not re-verified.
//!
//! A full mTLS handshake checks three signatures on the client side: the client's
//! CertificateVerify (proof that it holds the key, different in every handshake) and the two
//! signatures of its chain (leaf by intermediate, intermediate by root). The chain's verdict is
//! a pure function of the chain's bytes, the trust store, the policy and the time, so
//! [`CachingVerifier`] keeps it for chains seen before, keyed by the SHA-256 of the exact
//! bytes presented, and only while the verdict holds ([`VerifiedChain::valid_from`] ..
//! `valid_until`: certificate validity and CRL nextUpdate). The proof of possession is never
//! cached: rustls checks CertificateVerify on every handshake.
//!
//! - One cache per trust store and policy: [`CachingVerifier`] owns all three, so a verdict
//!   can never be reused under other trust settings. A configuration reload builds new ones.
//! - Only successes are cached; a refused chain is verified (and explained) every time.
//! - Bounded: when `capacity` chains are held, the cache is emptied and starts again, which
//!   keeps memory flat under a flood of distinct chains at the cost of re-verifying.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls_pki_types::{CertificateDer, UnixTime};

use crate::verify::{TrustStore, VerifyError, VerifyPolicy};

/// How many distinct chains a cache holds before it starts again.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Path validation with a cache of chains that verified, for one trust store and policy.
#[derive(Debug)]
pub struct CachingVerifier {
    store: TrustStore,
    policy: VerifyPolicy,
    capacity: usize,
    /// SHA-256 of the presented chain → its verdict.
    verified: Mutex<HashMap<[u8; 32], Verdict>>,
}

/// A chain that verified: when the verdict holds, and which presented certificates form the
/// verified path.
#[derive(Debug, Clone)]
struct Verdict {
    from: UnixTime,
    until: UnixTime,
    path: Path,
}

/// Positions of the verified path's intermediates in the presented chain, leaf side first
/// (see [`crate::verify::VerifiedChain::intermediates`]).
pub type Path = Arc<[usize]>;

impl CachingVerifier {
    pub fn new(store: TrustStore, policy: VerifyPolicy, capacity: usize) -> Self {
        CachingVerifier { store, policy, capacity, verified: Mutex::new(HashMap::new()) }
    }

    pub fn store(&self) -> &TrustStore {
        &self.store
    }

    pub fn policy(&self) -> &VerifyPolicy {
        &self.policy
    }

    /// Verifies `chain` (leaf first) at `now`, answering from the cache when this exact chain
    /// verified before and its verdict still holds. Returns the verified path's intermediates.
    pub fn verify(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> Result<Path, VerifyError> {
        let key = chain_key(chain);
        if let Some(v) = self.lock().get(&key)
            && v.from <= now
            && now < v.until
        {
            return Ok(v.path.clone());
        }
        let verified = self.store.verify(chain, &self.policy, now)?;
        let path: Path = verified.intermediates.into();
        let mut cache = self.lock();
        if cache.len() >= self.capacity {
            cache.clear();
        }
        let verdict = Verdict { from: verified.valid_from, until: verified.valid_until, path };
        cache.insert(key, verdict.clone());
        Ok(verdict.path)
    }

    /// How many chains are remembered (for tests and metrics).
    pub fn cached(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Verdict>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts).
        self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// SHA-256 over each certificate's length and bytes, so no two chains share a key.
fn chain_key(chain: &[CertificateDer<'_>]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for cert in chain {
        ctx.update(&(cert.len() as u64).to_be_bytes());
        ctx.update(cert);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{LeafSpec, TestPki};
    use crate::verify::unix_time;
    use ::time::{Duration, OffsetDateTime};
    use x509_parser::prelude::FromDer;

    fn at(t: OffsetDateTime) -> UnixTime {
        unix_time(t)
    }

    #[test]
    fn verdict_is_reused_only_within_its_validity() {
        let pki = TestPki::new();
        let now = OffsetDateTime::now_utc();
        let leaf = pki.leaf(LeafSpec {
            not_before: Some(now - Duration::hours(1)),
            not_after: Some(now + Duration::hours(1)),
            ..LeafSpec::client()
        });
        let store = TrustStore::from_der(vec![pki.root_der()], vec![]).unwrap();
        let verifier = CachingVerifier::new(store, VerifyPolicy::client(), 10);
        let chain = leaf.chain_der();
        verifier.verify(&chain, at(now)).unwrap();
        assert_eq!(verifier.cached(), 1);
        verifier.verify(&chain, at(now + Duration::minutes(30))).unwrap();
        assert_eq!(verifier.cached(), 1, "a repeat is answered from the cache");
        let err = verifier.verify(&chain, at(now + Duration::hours(2))).unwrap_err();
        assert!(matches!(err, VerifyError::Expired { .. }), "{err}");
        let err = verifier.verify(&chain, at(now - Duration::hours(2))).unwrap_err();
        assert!(matches!(err, VerifyError::NotYetValid { .. }), "{err}");
    }

    #[test]
    fn refusals_are_not_cached_and_capacity_is_bounded() {
        let pki = TestPki::new();
        let other = TestPki::new();
        let store = TrustStore::from_der(vec![pki.root_der()], vec![]).unwrap();
        let verifier = CachingVerifier::new(store, VerifyPolicy::client(), 2);
        let stranger = other.client("stranger", &["spiffe://test/x"]);
        assert!(verifier.verify(&stranger.chain_der(), at(OffsetDateTime::now_utc())).is_err());
        assert_eq!(verifier.cached(), 0);
        for i in 0..3 {
            let san = format!("spiffe://test/{i}");
            let leaf = pki.client(&format!("c{i}"), &[&san]);
            verifier.verify(&leaf.chain_der(), at(OffsetDateTime::now_utc())).unwrap();
            assert!(verifier.cached() <= 2);
        }
    }

    #[test]
    fn verdict_made_with_crls_ends_at_their_next_update() {
        let pki = TestPki::new();
        let leaf = pki.client("joe", &["spiffe://test/joe"]);
        let crl = pki.crl_der(&[]);
        let store = TrustStore::from_der(vec![pki.root_der()], vec![crl.clone()]).unwrap();
        let verified = store.verify(&leaf.chain_der(), &VerifyPolicy::client(), UnixTime::now());
        let verified = verified.unwrap();
        let (_, parsed) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&crl).unwrap();
        let next_update = unix_time(parsed.next_update().unwrap().to_datetime());
        assert!(verified.valid_until <= next_update);
        assert!(verified.valid_from <= UnixTime::now());
    }

    #[test]
    fn key_depends_on_every_certificate() {
        let a = CertificateDer::from(vec![1u8, 2, 3]);
        let b = CertificateDer::from(vec![4u8]);
        let ab = CertificateDer::from(vec![1u8, 2, 3, 4]);
        assert_ne!(chain_key(&[a.clone(), b.clone()]), chain_key(&[ab]));
        assert_ne!(chain_key(&[a.clone(), b.clone()]), chain_key(&[b, a]));
    }
}
