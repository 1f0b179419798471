//! The bodies of Ferry's fuzz targets: each takes arbitrary bytes, feeds
//! them to a decoder of untrusted input, and checks what a decoder must
//! never do: panic, accept what it should refuse, or accept something it
//! cannot give back as it came.
//!
//! The coverage-guided fuzzers in `fuzz/` (cargo-fuzz, on a nightly
//! toolchain) call these; so does the test below on stable, over the
//! committed corpus (`fuzz/corpus/<target>/`, where every input a fuzzer
//! ever found failing stays once fixed) and over seeded random inputs, so
//! that CI runs the very same checks.

use std::sync::OnceLock;

use ferry_core::protocol::{BatchId, SyncRequest};
use ferry_core::{ClientId, Collection, FieldName, Hlc, RecordId, SpaceId, UserId};

use crate::auth::external::{SharedSecret, SharedSecretConfig};
use crate::auth::issuer::{Issuer, generate_key, screen};
use crate::billing::signature::{sign, verify_lemonsqueezy, verify_stripe};

/// A fuzz target's checks over one input.
pub type Check = fn(&[u8]);

/// Every target, by the name of its file in `fuzz/fuzz_targets/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("sync_request", sync_request),
    ("hlc", hlc),
    ("names", names),
    ("access_token", access_token),
    ("external_token", external_token),
    ("stripe_signature", stripe_signature),
    ("lemonsqueezy_signature", lemonsqueezy_signature),
];

/// A sync request body: refused with an error, or accepted and given back
/// unchanged by encoding it and decoding it again.
pub fn sync_request(data: &[u8]) {
    if let Ok(request) = SyncRequest::from_json(data) {
        let text = serde_json::to_vec(&request)
            .unwrap_or_else(|e| panic!("an accepted request does not encode: {e}"));
        let again = SyncRequest::from_json(&text)
            .unwrap_or_else(|e| panic!("an accepted request, encoded, is refused: {e}"));
        assert_eq!(again, request, "a request changed on its way back");
    }
}

/// Clocks: one parsed prints exactly as it came, and two parsed compare as
/// their texts do (PROTOCOL.md section 1: byte-wise order is clock order).
/// The input is one clock, or two on two lines.
pub fn hlc(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once('\n').unwrap_or((&text, ""));
    let parse = |s: &str| s.parse::<Hlc>().ok().map(|h| (h, s.to_owned()));
    for s in [&*text, a, b] {
        if let Some((h, s)) = parse(s) {
            assert_eq!(h.to_string(), s, "a clock printed otherwise than it came");
        }
    }
    if let (Some((ha, a)), Some((hb, b))) = (parse(a), parse(b)) {
        assert_eq!(ha.cmp(&hb), a.cmp(&b), "clock order is not text order");
    }
}

/// Every kind of name: accepted only as given back, refused with an error.
pub fn names(data: &[u8]) {
    let s = String::from_utf8_lossy(data).into_owned();
    fn check<T: AsRef<str>, E>(s: &str, made: Result<T, E>) {
        if let Ok(name) = made {
            assert_eq!(name.as_ref(), s, "a name changed when accepted");
        }
    }
    check(&s, SpaceId::new(s.clone()));
    check(&s, Collection::new(s.clone()));
    check(&s, RecordId::new(s.clone()));
    check(&s, FieldName::new(s.clone()));
    check(&s, ClientId::new(s.clone()));
    check(&s, UserId::new(s.clone()));
    if let Ok(batch) = BatchId::new(s.clone()) {
        assert_eq!(batch.as_str(), s, "a batch id changed when accepted");
    }
}

/// One issuer, and one token it minted, for every input.
fn minted() -> &'static (Issuer, String) {
    static MINTED: OnceLock<(Issuer, String)> = OnceLock::new();
    MINTED.get_or_init(|| {
        let key = generate_key(0).unwrap_or_else(|e| panic!("a signing key: {e}"));
        let issuer = Issuer::from_keys(&[key]).unwrap_or_else(|e| panic!("an issuer: {e}"));
        let user = UserId::new("u1").unwrap_or_else(|e| panic!("{e}"));
        let now = crate::clock::wall_ms() / 1000;
        let token = issuer
            .mint(&user, now, 3600)
            .unwrap_or_else(|e| panic!("a token: {e}"));
        (issuer, token)
    })
}

/// The part of a JWT its signature covers.
fn signed_part(token: &str) -> Option<&str> {
    token.rsplit_once('.').map(|(head, _)| head)
}

/// Ferry's own access tokens: the header screen and the verification never
/// panic, and nothing verifies but a token whose header and claims are the
/// minted token's own (base64 may ignore a changed trailing bit of the
/// signature; it never lets a changed claim through).
pub fn access_token(data: &[u8]) {
    let (issuer, real) = minted();
    let token = String::from_utf8_lossy(data);
    let _ = screen(&token);
    if let Ok(user) = issuer.verify(&token) {
        assert_eq!(user.as_str(), "u1");
        assert_eq!(
            signed_part(&token),
            signed_part(real),
            "a forged token verified: {token}"
        );
    }
}

/// A provider's HS256 tokens (a shared secret): nothing verifies without
/// the secret, so no input does.
pub fn external_token(data: &[u8]) {
    static SHARED: OnceLock<SharedSecret> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        SharedSecret::new(&SharedSecretConfig {
            secret: "a shared secret no input knows".into(),
            issuer: Some("https://id.example".into()),
            audience: None,
            email_trust: Default::default(),
        })
    });
    let token = String::from_utf8_lossy(data);
    assert!(
        shared.verify(&token).is_err(),
        "a token verified without the secret: {token}"
    );
}

/// The current time the webhook targets check signatures at.
const NOW: u64 = 1_780_000_000;

/// The first line is a header, the rest the body.
fn header_and_body(data: &[u8]) -> (String, &[u8]) {
    let at = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let header = String::from_utf8_lossy(&data[..at]).into_owned();
    (header, data.get(at + 1..).unwrap_or_default())
}

/// `Stripe-Signature`: never a panic, and a header verifies only if it
/// carries the signature of its body for a time within the tolerance (in
/// hex of either case: the same bytes; the fuzzer's first find was this
/// check forgetting so, kept in the corpus as `uppercase_hex_v1`).
pub fn stripe_signature(data: &[u8]) {
    let (header, body) = header_and_body(data);
    let secrets = vec!["whsec_fuzz".to_owned()];
    if verify_stripe(&header, body, &secrets, NOW).is_ok() {
        let lower = header.to_ascii_lowercase();
        let signed = header
            .split(',')
            .filter_map(|p| p.trim().strip_prefix("t="));
        let genuine = signed.filter_map(|t| t.parse::<u64>().ok()).any(|t| {
            let good = sign::stripe("whsec_fuzz", t, body);
            let v1 = good.split_once(",v1=").map_or("", |(_, v)| v).to_owned();
            lower.contains(&v1)
        });
        assert!(genuine, "a forged Stripe signature verified: {header}");
    }
}

/// `X-Signature`: never a panic, and only the body's own HMAC verifies.
pub fn lemonsqueezy_signature(data: &[u8]) {
    let (header, body) = header_and_body(data);
    if verify_lemonsqueezy(&header, body, Some("ls_fuzz")).is_ok() {
        let good = sign::lemonsqueezy("ls_fuzz", body);
        assert!(
            header.trim().eq_ignore_ascii_case(&good),
            "a forged Lemon Squeezy signature verified: {header}"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    use super::*;

    fn corpus(target: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(target)
    }

    /// Every committed input of every target passes its checks; a target
    /// without a corpus is a mistake.
    #[test]
    fn the_fuzz_corpus_passes() {
        for (name, check) in TARGETS {
            let dir = corpus(name);
            let entries = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("the corpus of {name} at {}: {e}", dir.display()));
            let mut inputs = 0;
            for entry in entries {
                let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
                let data =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                check(&data);
                inputs += 1;
            }
            assert!(inputs > 0, "{name} has an empty corpus");
        }
    }

    /// Each target over 10,000 inputs: its corpus entries bent (bytes
    /// replaced, cut out, put in) and arbitrary bytes.
    #[test]
    fn the_fuzz_targets_hold_on_random_input() {
        for (name, check) in TARGETS {
            let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(corpus(name))
                .unwrap_or_else(|e| panic!("{e}"))
                .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                .collect();
            seeds.sort();
            let bent = (
                0..seeds.len(),
                prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
            )
                .prop_map(move |(i, edits)| {
                    let mut bytes = seeds[i].clone();
                    for (at, byte, kind) in edits {
                        let at = if bytes.is_empty() {
                            0
                        } else {
                            at % bytes.len()
                        };
                        match kind {
                            0 if !bytes.is_empty() => bytes[at] = byte,
                            1 if !bytes.is_empty() => {
                                bytes.remove(at);
                            }
                            _ => bytes.insert(at, byte),
                        }
                    }
                    bytes
                });
            let input = prop_oneof![3 => bent, 1 => prop::collection::vec(any::<u8>(), 0..300)];
            let mut runner = TestRunner::new(Config {
                cases: 10_000,
                failure_persistence: None,
                ..Config::default()
            });
            runner
                .run(&input, |data| {
                    check(&data);
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
