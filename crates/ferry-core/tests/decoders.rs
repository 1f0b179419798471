//! Every decoder of untrusted input, thrown arbitrary and bent input
//! (proptest, 10,000 cases each, seeded per run; a failing case is shrunk
//! and printed with its seed): none panics, and whatever one accepts is
//! well-formed by Ferry's own rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferry_core::protocol::SyncRequest;
use ferry_core::{ClientId, Collection, FieldName, Hlc, RecordId, SpaceId, UserId};
use proptest::prelude::*;

const HLC: &str = "001763798400000:00000:c1";

/// A valid sync request, the seed the bent ones grow from.
fn valid_request() -> String {
    format!(
        r#"{{"client_id":"c1","batch_id":"b1","cursor":3,"limit":10,"changes":[
            {{"op":"upsert","collection":"todos","id":"t-1","fields":{{"title":{{"value":"milk","hlc":"{HLC}"}}}}}},
            {{"op":"delete","collection":"todos","id":"t-2","hlc":"{HLC}"}}]}}"#
    )
}

/// The valid request with bytes replaced, removed and inserted at random.
fn bent_request() -> impl Strategy<Value = Vec<u8>> {
    let base = valid_request().into_bytes();
    let len = base.len();
    prop::collection::vec((0..len, any::<u8>(), 0u8..3), 1..8).prop_map(move |edits| {
        let mut bytes = base.clone();
        for (at, byte, kind) in edits {
            let at = at.min(bytes.len().saturating_sub(1));
            match kind {
                0 if !bytes.is_empty() => bytes[at] = byte,
                1 if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, byte),
            }
        }
        bytes
    })
}

/// Text that looks like JSON or like Ferry's names and clocks, and text that
/// does not.
fn texty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9:_.\\-/ ]{0,80}",
        "[0-9]{0,20}:[0-9]{0,8}:[ -~]{0,40}",
        "[\\[\\]{}\":,0-9a-z]{0,200}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn sync_requests_never_panic_and_accepted_ones_are_valid(bytes in prop_oneof![
        bent_request(),
        prop::collection::vec(any::<u8>(), 0..400),
        texty().prop_map(String::into_bytes),
    ]) {
        if let Ok(request) = SyncRequest::from_json(&bytes) {
            // Names and clocks in an accepted request obey the rules.
            prop_assert!(ClientId::new(request.client_id.as_str()).is_ok());
            let again = serde_json::to_vec(&request).unwrap();
            prop_assert!(SyncRequest::from_json(&again).is_ok(), "{}", String::from_utf8_lossy(&again));
        }
    }

    #[test]
    fn clocks_never_panic_and_accepted_ones_round_trip(s in texty()) {
        if let Ok(h) = s.parse::<Hlc>() {
            prop_assert_eq!(h.to_string().parse::<Hlc>().unwrap(), h.clone());
            prop_assert_eq!(h.to_string(), s);
        }
    }

    #[test]
    fn names_never_panic_and_accepted_ones_round_trip(s in texty()) {
        for accepted in [
            SpaceId::new(s.clone()).map(|n| n.to_string()),
            Collection::new(s.clone()).map(|n| n.to_string()),
            RecordId::new(s.clone()).map(|n| n.to_string()),
            FieldName::new(s.clone()).map(|n| n.to_string()),
            ClientId::new(s.clone()).map(|n| n.to_string()),
            UserId::new(s.clone()).map(|n| n.to_string()),
        ].into_iter().flatten() {
            prop_assert_eq!(&accepted, &s);
            prop_assert!(!accepted.is_empty());
            prop_assert!(!accepted.chars().any(char::is_control), "{:?}", accepted);
        }
    }

    #[test]
    fn local_writes_never_panic(s in texty()) {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&s) {
            let _ = ferry_core::local::LocalWrite::put(value.clone());
            let _ = ferry_core::local::LocalWrite::patch(value);
        }
    }
}
