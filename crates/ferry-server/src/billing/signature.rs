//! Webhook signatures: Stripe's `Stripe-Signature` and Lemon Squeezy's
//! `X-Signature`, both HMAC-SHA256 and checked on the raw body exactly as it
//! arrived (a body parsed and written out again no longer matches). Digests
//! are compared in constant time by `hmac`'s `verify_slice`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a Stripe signature's timestamp may be from now.
pub const STRIPE_TOLERANCE_SECS: u64 = 300;

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature header.
    #[error("the request is not signed ({0} is missing)")]
    Missing(&'static str),
    /// The header is not what the provider sends.
    #[error("the signature header is malformed: {0}")]
    Malformed(&'static str),
    /// The timestamp is outside the tolerance: a replay, or a clock far off.
    #[error("the signature's timestamp is {0} s away from now (at most {STRIPE_TOLERANCE_SECS} s)")]
    Stale(u64),
    /// No configured secret gives this signature.
    #[error("the signature does not match")]
    Mismatch,
    /// No secret is configured for this provider.
    #[error("webhooks of this provider are not configured")]
    NotConfigured,
}

fn mac(secret: &str) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
}

/// Checks `Stripe-Signature: t=...,v1=...[,v1=...]` over `{t}.{body}` with
/// any of `secrets` (several while one is rotated), `now_secs` being the
/// current Unix time.
pub fn verify_stripe(
    header: &str,
    body: &[u8],
    secrets: &[String],
    now_secs: u64,
) -> Result<(), SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NotConfigured);
    }
    let mut timestamp: Option<&str> = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed("expected key=value pairs"))?;
        match key {
            "t" if timestamp.is_none() => timestamp = Some(value),
            "t" => return Err(SignatureError::Malformed("more than one t")),
            // Anything but hex cannot match; it is skipped, not an error,
            // so that a new scheme beside v1 does not break old ones.
            "v1" => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no t"))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no v1 signature"));
    }
    let t: u64 = timestamp
        .parse()
        .map_err(|_| SignatureError::Malformed("t is not a Unix time"))?;
    let skew = now_secs.abs_diff(t);
    if skew > STRIPE_TOLERANCE_SECS {
        return Err(SignatureError::Stale(skew));
    }
    for secret in secrets {
        let mut m = mac(secret);
        m.update(timestamp.as_bytes());
        m.update(b".");
        m.update(body);
        if signatures.iter().any(|s| m.clone().verify_slice(s).is_ok()) {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// Checks Lemon Squeezy's `X-Signature`: the hex HMAC-SHA256 of the body.
pub fn verify_lemonsqueezy(
    header: &str,
    body: &[u8],
    secret: Option<&str>,
) -> Result<(), SignatureError> {
    let secret = secret.ok_or(SignatureError::NotConfigured)?;
    let signature = hex::decode(header.trim())
        .map_err(|_| SignatureError::Malformed("X-Signature is not hex"))?;
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&signature)
        .map_err(|_| SignatureError::Mismatch)
}

/// The signatures a provider would send, for Ferry's tests and for
/// developers trying webhooks by hand.
pub mod sign {
    use super::{Mac, mac};

    /// A `Stripe-Signature` header for `body` at Unix time `t`.
    pub fn stripe(secret: &str, t: u64, body: &[u8]) -> String {
        let mut m = mac(secret);
        m.update(t.to_string().as_bytes());
        m.update(b".");
        m.update(body);
        format!("t={t},v1={}", hex::encode(m.finalize().into_bytes()))
    }

    /// An `X-Signature` header for `body`.
    pub fn lemonsqueezy(secret: &str, body: &[u8]) -> String {
        let mut m = mac(secret);
        m.update(body);
        hex::encode(m.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_763_798_400;
    const BODY: &[u8] = br#"{"id":"evt_1","type":"customer.subscription.updated"}"#;

    fn secrets(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn stripe_signatures_are_checked_with_every_secret_and_every_v1() {
        let good = sign::stripe("whsec_new", NOW, BODY);
        let all = secrets(&["whsec_old", "whsec_new"]);
        assert_eq!(verify_stripe(&good, BODY, &all, NOW), Ok(()));
        assert_eq!(verify_stripe(&good, BODY, &all, NOW + 300), Ok(()));
        assert_eq!(
            verify_stripe(&good, BODY, &secrets(&["whsec_old"]), NOW),
            Err(SignatureError::Mismatch)
        );
        // During a rotation Stripe signs with both: either v1 may match.
        let v1 = good.split_once(",v1=").unwrap().1;
        let both = format!("t={NOW},v1={},v1={v1},v0=abc", "00".repeat(32));
        assert_eq!(
            verify_stripe(&both, BODY, &secrets(&["whsec_new"]), NOW),
            Ok(())
        );
    }

    #[test]
    fn stripe_refuses_stale_tampered_and_malformed_signatures() {
        let all = secrets(&["whsec_1"]);
        let good = sign::stripe("whsec_1", NOW, BODY);
        assert_eq!(
            verify_stripe(&good, BODY, &all, NOW + 301),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify_stripe(&good, BODY, &all, NOW - 301),
            Err(SignatureError::Stale(301))
        );
        // The same JSON written out again (spaces) is another body.
        let reserialized = br#"{"id": "evt_1", "type": "customer.subscription.updated"}"#;
        assert_eq!(
            verify_stripe(&good, reserialized, &all, NOW),
            Err(SignatureError::Mismatch)
        );
        // A signature moved to another time does not match.
        let moved = good.replace(&format!("t={NOW}"), &format!("t={}", NOW + 1));
        assert_eq!(
            verify_stripe(&moved, BODY, &all, NOW),
            Err(SignatureError::Mismatch)
        );
        for bad in [
            "",
            "t=1",
            "v1=00",
            "t=x,v1=00",
            "garbage",
            "t=1,t=2,v1=00",
            "t=1,v1=zz",
        ] {
            assert!(
                matches!(
                    verify_stripe(bad, BODY, &all, NOW),
                    Err(SignatureError::Malformed(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            verify_stripe(&good, BODY, &[], NOW),
            Err(SignatureError::NotConfigured)
        );
    }

    #[test]
    fn lemonsqueezy_signatures_are_the_hmac_of_the_body() {
        let good = sign::lemonsqueezy("ls_secret", BODY);
        assert_eq!(verify_lemonsqueezy(&good, BODY, Some("ls_secret")), Ok(()));
        assert_eq!(
            verify_lemonsqueezy(&good, BODY, Some("other")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_lemonsqueezy(&good, b"{}", Some("ls_secret")),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify_lemonsqueezy("not hex", BODY, Some("ls_secret")),
            Err(SignatureError::Malformed(_))
        ));
        assert_eq!(
            verify_lemonsqueezy(&good, BODY, None),
            Err(SignatureError::NotConfigured)
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(10_000))]

            /// Arbitrary headers, as sent and bent: the parsers never
            /// panic, and no header but the one signed verifies.
            #[test]
            fn no_forged_stripe_header_verifies(
                header in prop_oneof![
                    any::<String>(),
                    "(t=[0-9]{0,12}|v1=[0-9a-f]{0,70}|v0=[a-z]{0,4}|[ -~]{0,20})(,(t=[0-9]{0,12}|v1=[0-9a-f]{0,70}|[ -~]{0,10})){0,4}",
                ],
                body in prop::collection::vec(any::<u8>(), 0..200),
            ) {
                let signed = sign::stripe("whsec_a", NOW, &body);
                prop_assume!(header != signed);
                prop_assert!(verify_stripe(&header, &body, &secrets(&["whsec_a"]), NOW).is_err());
            }

            #[test]
            fn no_forged_lemonsqueezy_header_verifies(
                header in prop_oneof![any::<String>(), "[0-9a-fA-F ]{0,70}"],
                body in prop::collection::vec(any::<u8>(), 0..200),
            ) {
                let signed = sign::lemonsqueezy("ls_secret", &body);
                prop_assume!(!header.trim().eq_ignore_ascii_case(&signed));
                prop_assert!(verify_lemonsqueezy(&header, &body, Some("ls_secret")).is_err());
            }
        }
    }
}
