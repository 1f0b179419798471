//! The signature of a delivery, as Stripe signs its webhooks: the header
//! `Ferry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`,
//! with one `v1` per active secret so that a secret rotates without a gap.
//! [`verify`] is what a receiver does (Ferry's tests do it; so may an app's
//! backend written in Rust).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header's name.
pub const HEADER: &str = "ferry-signature";

fn mac(secret: &str, t: u64, body: &[u8]) -> Option<Vec<u8>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac.finalize().into_bytes().to_vec())
}

/// The header's value for `body` sent at `t` (unix seconds), signed with
/// each of `secrets`.
pub fn sign(secrets: &[String], t: u64, body: &[u8]) -> String {
    let mut value = format!("t={t}");
    for secret in secrets {
        if let Some(m) = mac(secret, t, body) {
            value.push_str(",v1=");
            value.push_str(&crate::ids::hex(&m));
        }
    }
    value
}

/// Whether `header` signs `body` with `secret`, at a time within
/// `tolerance_secs` of `now_secs` (a replayed old delivery is refused).
/// The comparison takes constant time.
pub fn verify(header: &str, secret: &str, body: &[u8], now_secs: u64, tolerance_secs: u64) -> bool {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let Some(t) = t.filter(|t| t.abs_diff(now_secs) <= tolerance_secs) else {
        return false;
    };
    let Some(expected) = mac(secret, t, body).map(|m| crate::ids::hex(&m)) else {
        return false;
    };
    signatures
        .iter()
        .any(|s| subtle::ConstantTimeEq::ct_eq(s.as_bytes(), expected.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secret_signs_and_a_receiver_checks_one() {
        let secrets = vec![
            "old-secret-0123456789".to_owned(),
            "new-secret-0123456789".to_owned(),
        ];
        let header = sign(&secrets, 1_000, b"{\"a\":1}");
        assert_eq!(header.matches("v1=").count(), 2);
        for secret in &secrets {
            assert!(verify(&header, secret, b"{\"a\":1}", 1_010, 300));
        }
        assert!(!verify(
            &header,
            "another-secret-012345",
            b"{\"a\":1}",
            1_010,
            300
        ));
        assert!(!verify(&header, &secrets[0], b"{\"a\":2}", 1_010, 300));
        assert!(
            !verify(&header, &secrets[0], b"{\"a\":1}", 2_000, 300),
            "too old"
        );
        assert!(!verify("v1=00", &secrets[0], b"", 0, 300));
        assert!(!verify("", &secrets[0], b"", 0, 300));
    }
}
