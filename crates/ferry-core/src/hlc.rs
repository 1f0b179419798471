//! Hybrid logical clocks (PROTOCOL.md §1).
//!
//! An [`Hlc`] is `PHYSICAL:LOGICAL:NODE`: 15 zero-padded digits of
//! milliseconds since the Unix epoch, 5 zero-padded digits of a logical
//! counter, and the writer's client id. The fixed widths make byte-wise
//! string order equal to the order of `(physical, logical, node)`, which is
//! what the derived `Ord` compares, so the two can never disagree.
//!
//! The clock never reads the time itself: callers pass `now_ms`, which keeps
//! this crate free of I/O and lets tests drive time.
//!
//! ```
//! use ferry_core::{ClientId, Hlc};
//! let node = ClientId::new("laptop-7f3a").unwrap();
//! let first = Hlc::zero(node).tick(1_763_798_400_000);
//! assert_eq!(first.to_string(), "001763798400000:00000:laptop-7f3a");
//! // A clock that went backwards still moves forward.
//! let second = first.tick(1_763_798_300_000);
//! assert!(second > first);
//! assert_eq!(second.to_string(), "001763798400000:00001:laptop-7f3a");
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::names::{ClientId, NameError};

/// The largest physical time an HLC can carry (15 decimal digits).
pub const MAX_PHYSICAL: u64 = 999_999_999_999_999;
/// The largest logical counter an HLC can carry (5 decimal digits).
pub const MAX_LOGICAL: u32 = 99_999;

/// A hybrid logical clock timestamp. Orders exactly as its string encoding.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Hlc {
    physical: u64,
    logical: u32,
    node: ClientId,
}

/// A string that is not an HLC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HlcError {
    /// Not `PHYSICAL:LOGICAL:NODE` with 15 and 5 digits.
    #[error("invalid hlc: expected 15 digits, ':', 5 digits, ':', client id")]
    Format,
    /// The node part is not a client id.
    #[error("invalid hlc node: {0}")]
    Node(#[from] NameError),
}

impl Hlc {
    /// Builds an HLC from its parts; `None` when a part is out of range.
    pub fn new(physical: u64, logical: u32, node: ClientId) -> Option<Self> {
        (physical <= MAX_PHYSICAL && logical <= MAX_LOGICAL).then_some(Self {
            physical,
            logical,
            node,
        })
    }

    /// The lowest HLC of `node`: where a fresh replica's clock starts.
    pub fn zero(node: ClientId) -> Self {
        Self {
            physical: 0,
            logical: 0,
            node,
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn physical(&self) -> u64 {
        self.physical
    }

    /// The logical counter.
    pub fn logical(&self) -> u32 {
        self.logical
    }

    /// The client id of the writer.
    pub fn node(&self) -> &ClientId {
        &self.node
    }

    /// The timestamp of the next local write on this clock at wall time
    /// `now_ms`: `max(now, last.physical)`, with the logical counter bumped on
    /// a tie. Strictly greater than `self` (short of the year 33658, when the
    /// 15 digits run out and the clock stays put).
    #[must_use]
    pub fn tick(&self, now_ms: u64) -> Hlc {
        let now = now_ms.min(MAX_PHYSICAL);
        if now > self.physical {
            self.at(now, 0)
        } else {
            self.bump(self.physical, self.logical)
        }
    }

    /// Advances this clock past `remote`, seen at wall time `now_ms`. The
    /// result is strictly greater than both `self` and `remote`'s time, so the
    /// next local write orders after everything this replica has seen.
    #[must_use]
    pub fn observe(&self, remote: &Hlc, now_ms: u64) -> Hlc {
        let now = now_ms.min(MAX_PHYSICAL);
        let top = now.max(self.physical).max(remote.physical);
        if top == now && top > self.physical && top > remote.physical {
            return self.at(now, 0);
        }
        let logical = match (top == self.physical, top == remote.physical) {
            (true, true) => self.logical.max(remote.logical),
            (true, false) => self.logical,
            (false, true) => remote.logical,
            // `top` is one of the three; the first case handled `now`.
            (false, false) => 0,
        };
        let next = self.bump(top, logical);
        if next <= *remote {
            // Only when the counters ran out at `MAX_PHYSICAL`.
            return self.clone();
        }
        next
    }

    /// The same clock moved to `(physical, logical)`.
    fn at(&self, physical: u64, logical: u32) -> Hlc {
        Hlc {
            physical,
            logical,
            node: self.node.clone(),
        }
    }

    /// The timestamp right after `(physical, logical)` on this node; a full
    /// logical counter carries into the next millisecond.
    fn bump(&self, physical: u64, logical: u32) -> Hlc {
        if logical < MAX_LOGICAL {
            self.at(physical, logical + 1)
        } else if physical < MAX_PHYSICAL {
            self.at(physical + 1, 0)
        } else {
            self.at(MAX_PHYSICAL, MAX_LOGICAL)
        }
    }
}

// By hand rather than `into = "String"`, which would clone and allocate.
impl Serialize for Hlc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:015}:{:05}:{}",
            self.physical,
            self.logical,
            self.node.as_str()
        )
    }
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hlc({self})")
    }
}

fn digits(s: &str) -> Option<u64> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

impl FromStr for Hlc {
    type Err = HlcError;

    fn from_str(s: &str) -> Result<Self, HlcError> {
        let b = s.as_bytes();
        if b.len() < 23 || b[15] != b':' || b[21] != b':' {
            return Err(HlcError::Format);
        }
        // The checks above put ASCII ':' at 15 and 21, so these are char
        // boundaries.
        let physical = digits(&s[..15]).ok_or(HlcError::Format)?;
        let logical = digits(&s[16..21]).ok_or(HlcError::Format)?;
        let node = ClientId::new(&s[22..])?;
        let logical = u32::try_from(logical).map_err(|_| HlcError::Format)?;
        Ok(Hlc {
            physical,
            logical,
            node,
        })
    }
}

impl TryFrom<String> for Hlc {
    type Error = HlcError;
    fn try_from(s: String) -> Result<Self, HlcError> {
        s.parse()
    }
}

impl From<Hlc> for String {
    fn from(h: Hlc) -> String {
        h.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(s: &str) -> ClientId {
        ClientId::new(s).unwrap()
    }

    #[test]
    fn encodes_exactly_as_the_protocol_example() {
        let h = Hlc::new(1_763_798_400_000, 0, node("laptop-7f3a")).unwrap();
        assert_eq!(h.to_string(), "001763798400000:00000:laptop-7f3a");
        let parsed: Hlc = "001763798400000:00000:laptop-7f3a".parse().unwrap();
        assert_eq!(parsed, h);
        assert_eq!(
            serde_json::to_string(&h).unwrap(),
            "\"001763798400000:00000:laptop-7f3a\""
        );
    }

    #[test]
    fn refuses_malformed_strings() {
        for bad in [
            "",
            "1763798400000:0:a",
            "001763798400000:00000:",
            "001763798400000:00000",
            "001763798400000-00000:a",
            "00176379840000a:00000:a",
            "+01763798400000:00000:a",
            "001763798400000:+0000:a",
            "001763798400000:00000:a b",
            "001763798400000:0000:ab",
            "éé1763798400000:00000:a",
        ] {
            assert!(bad.parse::<Hlc>().is_err(), "{bad:?} parsed");
        }
        // A node may itself contain ':'.
        assert!("001763798400000:00000:a:b".parse::<Hlc>().is_ok());
    }

    #[test]
    fn tick_follows_the_wall_clock_and_bumps_on_ties() {
        let h = Hlc::zero(node("a")).tick(1000);
        assert_eq!((h.physical(), h.logical()), (1000, 0));
        let h = h.tick(1000);
        assert_eq!((h.physical(), h.logical()), (1000, 1));
        let h = h.tick(500);
        assert_eq!((h.physical(), h.logical()), (1000, 2));
        let h = h.tick(2000);
        assert_eq!((h.physical(), h.logical()), (2000, 0));
    }

    #[test]
    fn logical_overflow_carries_into_the_next_millisecond() {
        let h = Hlc::new(1000, MAX_LOGICAL, node("a")).unwrap();
        let next = h.tick(1000);
        assert_eq!((next.physical(), next.logical()), (1001, 0));
        assert!(next > h);
    }

    #[test]
    fn observe_moves_past_a_clock_from_the_future() {
        let local = Hlc::zero(node("slow")).tick(1000);
        let remote = Hlc::new(50_000, 7, node("fast")).unwrap();
        let after = local.observe(&remote, 1000);
        assert_eq!((after.physical(), after.logical()), (50_000, 8));
        assert_eq!(after.node().as_str(), "slow");
        assert!(after.tick(1000) > remote);
    }

    fn arb_node() -> impl Strategy<Value = ClientId> {
        "[A-Za-z0-9_.:-]{1,12}".prop_map(|s| ClientId::new(s).unwrap())
    }

    fn arb_hlc() -> impl Strategy<Value = Hlc> {
        (0..=MAX_PHYSICAL, 0..=MAX_LOGICAL, arb_node())
            .prop_map(|(p, l, n)| Hlc::new(p, l, n).unwrap())
    }

    /// Realistic times: any millisecond up to the year 2500.
    const LATE: u64 = 16_725_225_600_000;

    proptest! {
        #[test]
        fn encoding_round_trips(h in arb_hlc()) {
            let s = h.to_string();
            prop_assert_eq!(s.parse::<Hlc>().unwrap(), h);
        }

        #[test]
        fn string_order_is_hlc_order(a in arb_hlc(), b in arb_hlc()) {
            prop_assert_eq!(a.to_string().cmp(&b.to_string()), a.cmp(&b));
        }

        #[test]
        fn tick_strictly_increases(start in (0..LATE, 0..=MAX_LOGICAL, arb_node()), nows in prop::collection::vec(0..LATE, 1..50)) {
            let mut h = Hlc::new(start.0, start.1, start.2).unwrap();
            for now in nows {
                let next = h.tick(now);
                prop_assert!(next > h, "{next} <= {h}");
                prop_assert!(next.physical() >= now);
                prop_assert_eq!(next.node(), h.node());
                h = next;
            }
        }

        #[test]
        fn observe_strictly_increases_past_both(
            local in (0..LATE, 0..=MAX_LOGICAL, arb_node()),
            remotes in prop::collection::vec((0..LATE, 0..=MAX_LOGICAL, arb_node(), 0..LATE), 1..50),
        ) {
            let mut h = Hlc::new(local.0, local.1, local.2).unwrap();
            for (p, l, n, now) in remotes {
                let remote = Hlc::new(p, l, n).unwrap();
                let next = h.observe(&remote, now);
                prop_assert!(next > h, "{next} <= {h}");
                prop_assert!(next > remote, "{next} <= {remote}");
                prop_assert!(next.physical() >= now);
                prop_assert_eq!(next.node(), h.node());
                // The next local write is after the remote one too.
                prop_assert!(next.tick(now) > remote);
                h = next;
            }
        }
    }
}
