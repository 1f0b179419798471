//! Records as a pull or a listing sends them, and the pages that carry
//! them, bounded by count and by bytes.

use ferry_core::{Collection, Conflict};
use serde::Serialize;
use serde_json::value::RawValue;

use super::delivery;

/// A record as stored, ready to be sent: the fields stay the JSON text they
/// are stored as, so a page of records is encoded without re-parsing them.
/// Serializes exactly as [`ferry_core::Record`].
#[derive(Debug, Clone, Serialize)]
pub struct RecordRow {
    /// The record's collection.
    pub collection: String,
    /// The record's id.
    pub id: String,
    /// The `seq` of the last change that altered it.
    pub seq: u64,
    /// The fields as JSON (`{}` on a tombstone).
    pub fields: Box<RawValue>,
    /// The HLC of the delete, on a tombstone.
    pub deleted: Option<String>,
    /// The user whose change created it (`None` for a record stored before
    /// Ferry recorded authors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

/// What to pull.
#[derive(Debug, Clone)]
pub struct PullQuery {
    /// Records with `seq` above this.
    pub cursor: u64,
    /// At most this many.
    pub limit: u32,
    /// Only these collections, when set; the cursor still moves over the
    /// whole space.
    pub collections: Option<Vec<Collection>>,
    /// The replica whose conflict reports the page also delivers, if any.
    pub conflicts: Option<delivery::ConflictsFor>,
}

/// A page of a pull.
#[derive(Debug, Clone)]
pub struct PullPage {
    /// The records, ordered by `seq`.
    pub records: Vec<RecordRow>,
    /// The cursor to send next.
    pub cursor: u64,
    /// Whether more records wait.
    pub has_more: bool,
    /// The reports for [`PullQuery::conflicts`] that the page covers.
    pub conflicts: Vec<Conflict>,
}

/// The most bytes of record fields one page carries (a pull's or a REST
/// listing's), past its first record: memory per request stays bounded
/// whatever the records hold. A page stops after the record that reaches
/// it, and says more wait (`has_more`, `next`).
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// A page being filled with records, up to a count and [`MAX_PAGE_BYTES`].
#[derive(Debug)]
pub struct PageFill {
    /// The records taken.
    pub records: Vec<RecordRow>,
    bytes: usize,
    limit: usize,
    /// Whether records were left out: more wait.
    pub more: bool,
}

impl PageFill {
    /// An empty page of at most `limit` records.
    pub fn new(limit: u32) -> PageFill {
        PageFill {
            records: Vec::with_capacity(limit.min(1024) as usize),
            bytes: 0,
            limit: limit as usize,
            more: false,
        }
    }

    /// Offers the page the next record there is: whether it takes one
    /// more. When it does not, it is full and notes that more wait. The
    /// first record always fits, so a page always moves on.
    pub fn wants_next(&mut self) -> bool {
        if self.records.len() >= self.limit || self.bytes >= MAX_PAGE_BYTES {
            self.more = true;
            false
        } else {
            true
        }
    }

    /// Adds a record that [`PageFill::wants_next`] said fits.
    pub fn push(&mut self, record: RecordRow) {
        self.bytes += record.fields.get().len();
        self.records.push(record);
    }
}

impl PullPage {
    /// The page of `query` from `fill`, filled from the records after its
    /// cursor read with a limit one above the query's (the extra one says
    /// whether more wait), and `head`, the space's `seq` in the same
    /// snapshot.
    pub fn finish(fill: PageFill, query: &PullQuery, head: u64) -> PullPage {
        let has_more = fill.more;
        let rows = fill.records;
        // With more to come, the cursor stops at the last record sent; at
        // the end it moves to the head, past records a collection filter
        // left out.
        let cursor = if has_more {
            rows.last().map_or(query.cursor, |r| r.seq)
        } else {
            head
        };
        PullPage {
            records: rows,
            cursor,
            has_more,
            conflicts: Vec::new(),
        }
    }
}
