//! Conflicts that reach a replica after its push was answered: a write it
//! made was stored, and a concurrent write replaced it later without its
//! author having seen it ([`ferry_core::merge`]). The report is stored in
//! the same transaction as that commit, under the `seq` the replaced
//! record took, addressed to the replica that made the lost write (the node
//! of its HLC) and to the user who last pushed from that replica in the
//! space. A pull of that replica delivers the reports whose `seq` its page
//! covers, above the client's `conflict_cursor`: so each is delivered once
//! per page a client stores, on any node, for as long as the records of
//! that page are; compaction removes reports with the tombstones of their
//! age and raises the horizon over them, so a cursor that could have
//! missed one expires (`410`).
//!
//! Reports are bounded like records: a page carries about
//! [`MAX_PAGE_BYTES`] of them, all those of one `seq` at least, and ends
//! (with `has_more`) at the last `seq` it delivered.

use ferry_core::{ClientId, Conflict, Displaced, UserId};

use super::stored::corrupt;
use super::{MAX_PAGE_BYTES, PullPage, StoreError};

/// Whose reports a pull delivers.
#[derive(Debug, Clone)]
pub struct ConflictsFor {
    /// The replica pulling.
    pub client_id: ClientId,
    /// The user it pulls as: reports addressed to the replica under
    /// another user are not theirs.
    pub user: UserId,
    /// Reports with a `seq` above this were not delivered yet.
    pub after: u64,
}

/// A report to store: its `seq`, the replica it is for, its collection
/// (for a pull's filter) and its JSON.
#[derive(Debug, Clone)]
pub struct DisplacedRow {
    /// The `seq` of the commit's write to the record.
    pub seq: u64,
    /// The replica whose write lost.
    pub client_id: String,
    /// The record's collection.
    pub collection: String,
    /// The report, as JSON.
    pub conflict: String,
}

/// The reports of a batch as rows to store.
pub fn rows(displaced: &[(u64, Displaced)]) -> Result<Vec<DisplacedRow>, StoreError> {
    displaced
        .iter()
        .map(|(seq, d)| {
            Ok(DisplacedRow {
                seq: *seq,
                client_id: d.author.as_str().to_owned(),
                collection: d.conflict.collection.as_str().to_owned(),
                conflict: serde_json::to_string(&d.conflict)
                    .map_err(|e| StoreError::Internal(e.to_string()))?,
            })
        })
        .collect()
}

/// The reports of one page, gathered in `seq` order.
#[derive(Debug, Default)]
pub struct Delivery {
    conflicts: Vec<Conflict>,
    bytes: usize,
    last_seq: Option<u64>,
    cut: Option<u64>,
}

impl Delivery {
    /// Offers the next stored report (rows in `seq` order); whether it was
    /// taken. Once the page is full, the first report of a new `seq` is
    /// refused and the page ends at the `seq` before it.
    pub fn offer(&mut self, seq: u64, text: &str) -> Result<bool, StoreError> {
        if self.bytes >= MAX_PAGE_BYTES && self.last_seq.is_some_and(|last| last != seq) {
            self.cut = self.last_seq;
            return Ok(false);
        }
        self.conflicts
            .push(serde_json::from_str(text).map_err(|e| corrupt("conflict", e))?);
        self.bytes += text.len();
        self.last_seq = Some(seq);
        Ok(true)
    }

    /// Puts the reports into `page`; when they filled it, the page ends
    /// where they did.
    pub fn finish(self, page: &mut PullPage) {
        page.conflicts = self.conflicts;
        if let Some(end) = self.cut {
            page.records.retain(|r| r.seq <= end);
            page.cursor = end;
            page.has_more = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RecordRow;
    use serde_json::value::RawValue;

    fn report(big: bool) -> String {
        let value = if big {
            "x".repeat(MAX_PAGE_BYTES)
        } else {
            "x".into()
        };
        serde_json::json!({"collection": "todos", "id": "t", "field": "title",
            "kind": "stale_write",
            "yours": {"value": value, "hlc": "000000000000001:00000:a"},
            "winner": {"value": "y", "hlc": "000000000000002:00000:b"}})
        .to_string()
    }

    fn page(seqs: &[u64]) -> PullPage {
        PullPage {
            records: seqs
                .iter()
                .map(|&seq| RecordRow {
                    collection: "todos".into(),
                    id: format!("r{seq}"),
                    seq,
                    fields: RawValue::from_string("{}".into()).unwrap(),
                    deleted: None,
                    author: None,
                })
                .collect(),
            cursor: *seqs.last().unwrap(),
            has_more: false,
            conflicts: Vec::new(),
        }
    }

    #[test]
    fn a_full_page_ends_after_the_last_seq_it_delivered() {
        let mut d = Delivery::default();
        assert!(d.offer(3, &report(true)).unwrap());
        // The rest of seq 3 still comes with it; seq 5 waits.
        assert!(d.offer(3, &report(false)).unwrap());
        assert!(!d.offer(5, &report(false)).unwrap());
        let mut p = page(&[2, 3, 4, 5, 6]);
        d.finish(&mut p);
        assert_eq!(p.conflicts.len(), 2);
        assert_eq!(p.cursor, 3);
        assert!(p.has_more);
        assert_eq!(p.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn a_page_with_room_is_left_as_it_is() {
        let mut d = Delivery::default();
        assert!(d.offer(3, &report(false)).unwrap());
        assert!(d.offer(4, &report(false)).unwrap());
        let mut p = page(&[3, 4]);
        d.finish(&mut p);
        assert_eq!((p.conflicts.len(), p.cursor, p.has_more), (2, 4, false));
        assert!(Delivery::default().offer(1, "not json").is_err());
    }
}
