// How a record is kept in IndexedDB: its values in one flat object, and the
// HLC of its fields once (with the few fields written at another one
// apart), instead of a `{value, hlc}` object per field.
//
// Two reasons. A read decodes a flat object of values faster, and a query
// needs nothing else. And Chromium compresses a stored value larger than
// about 400 bytes, which makes reading it back cost some 17 µs more (a
// query returning 1,000 such records: 23 ms instead of 6); a record of a
// few short fields stored the old way (486 bytes for five fields) crossed
// that line, the same record packed (281 bytes) stays well under it.
// bench/README.md (live queries) has the figures.

import type { Fields } from "./types.js";

/** A record as the replica holds it, fields expanded (what merges take). */
export interface StoredRecord {
  space: string;
  collection: string;
  id: string;
  fields: Fields;
  deleted: string | null;
  /** 0 while a full resync has not yet seen this record again. */
  seen: 0 | 1;
  /**
   * 1 once the server has had the record (pulled, or a batch writing it
   * acknowledged). A resync tells a record deleted and compacted on the
   * server (remote, and gone) from one made here (not remote). Absent on
   * records stored before it existed: read as remote unless changes to
   * the record are pending.
   */
  remote?: 0 | 1;
  /**
   * Its entries in the `ix` index: `[space, collection, field, kind,
   * value?]` for each field of its collection the schema indexes (by the
   * core's `index_key`), none once deleted.
   */
  ix?: unknown[][];
  /** The user whose change created it: from the server, or this replica's user for a record made here. */
  author?: string;
}

/** A record as IndexedDB holds it (store `records`, from version 5). */
export interface PackedRecord {
  space: string;
  collection: string;
  id: string;
  deleted: string | null;
  seen: 0 | 1;
  remote?: 0 | 1;
  ix?: unknown[][];
  author?: string;
  /** Each field's value. */
  v: Record<string, unknown>;
  /** The HLC most of its fields were written at ("" when it has none). */
  h: string;
  /** The fields written at another HLC than `h`, each with its own. */
  o?: Record<string, string>;
}

/** The stored form of `rec`. */
export function pack(rec: StoredRecord): PackedRecord {
  const { fields, ...rest } = rec;
  const v: Record<string, unknown> = {};
  const counts = new Map<string, number>();
  let h = "";
  let most = 0;
  for (const name in fields) {
    const f = fields[name];
    v[name] = f.value;
    const n = (counts.get(f.hlc) ?? 0) + 1;
    counts.set(f.hlc, n);
    if (n > most) {
      most = n;
      h = f.hlc;
    }
  }
  const out: PackedRecord = { ...rest, v, h };
  if (counts.size > 1) {
    const o: Record<string, string> = {};
    for (const name in fields) if (fields[name].hlc !== h) o[name] = fields[name].hlc;
    out.o = o;
  }
  return out;
}

/**
 * The record `p` holds, fields expanded. A value stored before records
 * were packed (version 4) is taken as it is.
 */
export function unpack(p: PackedRecord | StoredRecord): StoredRecord {
  if (!("v" in p)) return p;
  const { v, h, o, ...rest } = p;
  const fields: Fields = {};
  // Own properties only: a field may be named like one every object
  // inherits (`constructor`, `toString`).
  for (const name in v) fields[name] = { value: v[name], hlc: o && Object.hasOwn(o, name) ? o[name] : h };
  return { ...rest, fields };
}

/** The live values of a stored record (packed or not). */
export function valuesOf(p: PackedRecord | StoredRecord): Record<string, unknown> {
  if ("v" in p) return p.v;
  const values: Record<string, unknown> = {};
  for (const name in p.fields) values[name] = p.fields[name].value;
  return values;
}
