// The protocol's shapes (PROTOCOL.md §2 and §4) and the client's own.

/** One field's value and the clock of the write that set it. */
export interface FieldValue {
  value: unknown;
  hlc: string;
}

export type Fields = Record<string, FieldValue>;

/** A record's state without its address. */
export interface RecordState {
  fields: Fields;
  deleted: string | null;
}

/** Per field, the HLC of the value the writing replica held (null: none). */
export type Bases = Record<string, string | null>;

export type Change =
  | { op: "upsert"; collection: string; id: string; fields: Fields; base?: Bases }
  | { op: "delete"; collection: string; id: string; hlc: string; base?: Bases };

/** A record as the server sends it. */
export interface ServerRecord extends RecordState {
  collection: string;
  id: string;
  seq: number;
  /** The user whose change created it (protocol v1.5; absent for records stored before). */
  author?: string;
}

/**
 * A write of this replica that lost. For `stale_write`, `yours` and
 * `winner` are the two values of `field`. For `record_deleted`, `field` is
 * null, `yours.value` holds this replica's writes the delete dropped as a
 * record's fields (`{name: {value, hlc}}`; `Ferry.restore` writes them as a
 * new record) and `winner.hlc` is the delete's.
 */
export interface Conflict {
  collection: string;
  id: string;
  field: string | null;
  kind: "stale_write" | "record_deleted";
  yours: FieldValue | null;
  winner: FieldValue | null;
}

export interface SyncAnswer {
  applied: number;
  conflicts: Conflict[];
  /** Earlier writes of this replica that concurrent writes replaced. */
  reported?: Conflict[];
  changes: ServerRecord[];
  cursor: number;
  has_more: boolean;
  hlc: string;
  /** The version of the app's schema in force (absent: none). */
  schema_version?: number;
  /** The caller's role in the space (v1.5): local writes are judged by it. */
  role?: "owner" | "editor" | "viewer";
}

/** The app's schema as the server serves it and a replica holds it. */
export interface HeldSchema {
  version: number;
  schema: unknown;
}

/** A live record as the app sees it. */
export interface LocalRecord<F = Record<string, unknown>> {
  space: string;
  collection: string;
  id: string;
  /** Field values by name. */
  fields: F;
}

/**
 * The record types of an app's collections by name: what `ferry schema
 * typescript` writes as `Schema`, for `Ferry.open<Schema>()`. Without one,
 * any collection takes any fields.
 */
export type AnySchema = Record<string, Record<string, unknown>>;

/** A collection's name in schema `S`. */
export type CollectionOf<S> = keyof S & string;

/** The fields a record of collection `C` holds in schema `S`. */
export type FieldsOf<S, C extends CollectionOf<S>> = S[C] extends Record<string, unknown>
  ? S[C]
  : Record<string, unknown>;

/** One filter: a field of `F`, an operator, and a value of that field's type. */
export type Filter<F> = {
  [K in keyof F & string]: [field: K, op: Op, value: F[K]] | [field: K, op: "in", values: F[K][]];
}[keyof F & string];

/** A record that changed: a local write (this tab or another) or a pull. */
export interface Changed {
  space: string;
  collection: string;
  id: string;
  source: "local" | "remote";
  /**
   * The record's fields after the change, when the writer had them at
   * hand (`null`: deleted); absent when not (read it with `get`).
   */
  fields?: Record<string, unknown> | null;
}

/** A conflict the server reported, waiting for the app to settle it. */
export interface StoredConflict {
  n: number;
  space: string;
  conflict: Conflict;
  at: number;
}

/** A local change the server refused for good (a viewer's write). */
export interface Rejected {
  n: number;
  space: string;
  change: Change;
  code: string;
  message: string;
  at: number;
}

export type Resolution = { keep: "mine" } | { keep: "theirs" } | { value: unknown };

export interface User {
  id: string;
  email: string | null;
}

export type SyncState = "idle" | "syncing" | "offline" | "paused" | "error" | "signed_out";

/** What the sync is doing, for a status indicator. */
export interface SyncStatus {
  state: SyncState;
  /** Local changes not yet acknowledged by the server. */
  pending: number;
  /** When a sync last completed (ms since the epoch), or null. */
  lastSyncedAt: number | null;
  /** The last error, for a person; null when none. */
  error: string | null;
  /** Whether this tab is the one that syncs. */
  leader: boolean;
}

export interface SyncReport {
  pushed: number;
  pulled: number;
  conflicts: number;
  rejected: number;
  resynced: boolean;
  /**
   * The server had forgotten history this replica had not pulled (`410`):
   * conflicts reported before its horizon may have been lost.
   */
  expired: boolean;
}

export type Op = "=" | "!=" | "<" | "<=" | ">" | ">=";

/** One order field, ascending unless it says otherwise. */
export type OrderBy<F> = [field: keyof F & string, order?: "asc" | "desc"];

/**
 * Filters (all must hold), an order (one field or several, then the record
 * id) and paging, for `list` and live queries. A record without a field
 * compares as if it were null; values of different types order null,
 * booleans, numbers, strings, arrays, objects (docs/live-queries.md).
 */
export interface Query<F = Record<string, unknown>> {
  where?: Filter<F>[];
  orderBy?: OrderBy<F> | OrderBy<F>[];
  limit?: number;
  offset?: number;
}

/**
 * A live query's current result. The same object until something in it
 * changes; a row that did not change is the same object in the next
 * result.
 */
export interface QueryResult<R = LocalRecord> {
  /** The rows in `[offset, offset + limit)`, in the query's order. */
  readonly rows: readonly R[];
  /**
   * `loading` until the rows are read and the space's first sync has
   * reached the server's head, then `complete`; `error` when the query is
   * not one or the replica could not be read.
   */
  readonly status: "loading" | "complete" | "error";
  readonly error?: FerryError;
}

/**
 * What a record's `file` field holds in place of a file's bytes
 * (docs/files.md §1): `Ferry.attach` gives one.
 */
export interface FileRef {
  /** The SHA-256 of the bytes, 64 lowercase hex digits. */
  sha256: string;
  size: number;
  /** `type/subtype`, like `image/png`. */
  media_type: string;
  /** The name to show and to save as. */
  name?: string;
}

/**
 * Where a file stands on this device: `local` (attached here, its upload
 * queued), `uploading` (with `sent` of `total` bytes on the server),
 * `failed` (the server refused it for good: `code`, `message`), `synced`
 * (the server holds it; its bytes are here or can be fetched),
 * `missing` (the server did not hold it when last asked: its author has
 * not uploaded it yet; asked again at each sync of the space) or `remote`
 * (not here, not asked for yet).
 */
export type FileStatus =
  | { state: "local" | "synced" | "missing" | "remote" }
  | { state: "uploading"; sent: number; total: number }
  | { state: "failed"; code: string; message: string };

/** A file's status changed, in this tab or another (`Ferry.onFile`). */
export type FileEvent = { space: string; sha256: string } & FileStatus;

/** An error the server answered (PROTOCOL.md §10), or the client's own. */
export class FerryError extends Error {
  constructor(
    message: string,
    /** The error code: the server's (`forbidden`, ...) or `offline`, `invalid`. */
    readonly code: string,
    /** The HTTP status, when the server answered. */
    readonly status: number | null = null,
    /** Seconds the server asked to wait (`Retry-After`). */
    readonly retryAfter: number | null = null,
    /**
     * What the error is about, where it says: for `schema` (a write the
     * app's schema refuses), `{collection, id, field, rule}`.
     */
    readonly details: Record<string, unknown> | null = null,
  ) {
    super(message);
    this.name = "FerryError";
  }

  /** Whether trying again later may work (network, 429, 503, a 5xx). */
  get transient(): boolean {
    return this.code === "offline" || this.status === 429 || (this.status !== null && this.status >= 500);
  }
}
