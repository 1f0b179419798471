// The local replica in IndexedDB: records, the outbox, cursors, the clock,
// conflicts and the session, with every step of a sync as one transaction.
//
// The same layout and rules as the native client's SQLite replica:
// a local write updates the record and appends to the outbox in one
// transaction; a batch is stamped with its id before it is first sent, so
// a retry (after a timeout, a crash or a reload) sends the same id and the
// server applies nothing twice; an answer removes the acknowledged changes,
// stores the conflicts, merges the pulled records and moves the cursor in
// one transaction, so the cursor never gets ahead of what is stored.
//
// All tabs of an origin share the database; IndexedDB serializes
// transactions over the same stores, so two tabs' writes never interleave
// inside one.

import { type DBSchema, type IDBPDatabase, type IDBPObjectStore, openDB, unwrap } from "idb";

import * as core from "./core.js";
import type {
  Change,
  Changed,
  Conflict,
  HeldSchema,
  LocalRecord,
  Query,
  Rejected,
  RecordState,
  Resolution,
  ServerRecord,
  StoredConflict,
  SyncAnswer,
  User,
} from "./types.js";
import { FerryError } from "./types.js";
import type { FileEntry } from "./files.js";
import { type PackedRecord, type StoredRecord, pack, unpack, valuesOf } from "./packed.js";

export type { StoredRecord } from "./packed.js";

/** The space a signed-out app writes to; it never leaves the device. */
export const ANONYMOUS_SPACE = "local:anonymous";

/** The most changes sent in one batch. */
export const MAX_BATCH = 1000;

/** The fields each collection's records carry index entries for (meta `indexes`). */
type IndexMap = Record<string, string[]>;

interface OutboxEntry {
  n?: number;
  space: string;
  collection: string;
  id: string;
  change: Change;
  /** Set when the change is first sent, and kept until acknowledged. */
  batch?: string;
}

interface SpaceEntry {
  space: string;
  cursor: number;
  /**
   * How far the server's conflict reports were taken into the inbox; a
   * resync moves `cursor` back to 0, not this. Absent before it existed:
   * read as `cursor`.
   */
  conflictCursor?: number;
  /** A full resync from 0 is under way: pulling, then (with `sending`) sending the batch stamped before it. */
  resync: boolean;
  sending?: boolean;
  syncedAt: number | null;
  /** A pull has reached the server's head: the space's first sync is done. */
  complete?: boolean;
  /** The user's role here, as the server's last answer said (local writes are judged by it). */
  role?: string;
}

/**
 * What a local write survives once its call returned: the browser or the
 * tab crashing or being killed (`crash`, the default), or also a power cut
 * (`power-loss`, a disk flush per write).
 */
export type Durability = "crash" | "power-loss";

/** The signed-in session, kept in the replica. */
export interface Session {
  user: User;
  server: string;
  accessToken: string;
  refreshToken: string | null;
  /** When the access token expires (ms since the epoch), when known. */
  expiresAt: number | null;
}

interface Schema extends DBSchema {
  records: {
    key: [string, string, string];
    // Packed (packed.ts); a database from before version 5 is packed by
    // its upgrade.
    value: PackedRecord;
    indexes: { ix: IDBValidKey };
  };
  outbox: {
    key: number;
    value: OutboxEntry;
    indexes: { space: string; batch: string; record: [string, string, string] };
  };
  spaces: { key: string; value: SpaceEntry };
  meta: { key: string; value: unknown };
  conflicts: { key: number; value: StoredConflict; indexes: { record: [string, string, string] } };
  rejected: { key: number; value: Rejected };
  files: { key: [string, string]; value: FileEntry };
  fileBlobs: { key: [string, string]; value: Blob };
}

type Db = IDBPDatabase<Schema>;
type StoreName = "records" | "outbox" | "spaces" | "meta" | "conflicts" | "rejected" | "files" | "fileBlobs";
// The stores of any read-write transaction that includes them.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Rw<S extends StoreName> = IDBPObjectStore<Schema, any, S, "readwrite">;

const ALL: StoreName[] = ["records", "outbox", "spaces", "meta", "conflicts", "rejected", "files", "fileBlobs"];

/** The keys of a space's records, or of one of its collections. */
function within(space: string, collection?: string): IDBKeyRange {
  const prefix = collection === undefined ? [space] : [space, collection];
  // An array sorts after every string, so [...prefix, []] ends the range.
  return IDBKeyRange.bound(prefix, [...prefix, []]);
}

function isLocal(space: string): boolean {
  return space.startsWith("local:");
}

function randomHex(bytes: number): string {
  const b = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function invalid(e: unknown): FerryError {
  return new FerryError(e instanceof Error ? e.message : String(e), "invalid");
}

/** Checks the names of a record's address; throws a FerryError. */
function checkNames(space: string, collection?: string, id?: string): void {
  try {
    core.checkName("space", space);
    if (collection !== undefined) core.checkName("collection", collection);
    if (id !== undefined) core.checkName("record", id);
  } catch (e) {
    throw invalid(e);
  }
}

/** What one stored answer did. */
export interface Stored {
  pushed: number;
  pulled: number;
  conflicts: number;
  resynced: boolean;
  changed: Changed[];
  /** Whether changes of the space still wait to be sent. */
  pending: boolean;
}

export class Store {
  /**
   * Per space: whether most records of the last page stored were already
   * here, which picks how the next page is stored (see `addEach`).
   */
  private readonly known = new Map<string, boolean>();

  private constructor(
    readonly db: Db,
    private id: string,
    private readonly durability: Durability,
  ) {}

  /**
   * This replica's client id, as this tab last read it. A sign-out that
   * wipes the replica gives it a new one (a wiped replica is a new device:
   * the server gives each client id to one person); `currentClientId`
   * reads it again, for a tab that did not do the wipe.
   */
  get clientId(): string {
    return this.id;
  }

  async currentClientId(): Promise<string> {
    this.id = ((await this.db.get("meta", "client_id")) as string | undefined) ?? this.id;
    return this.id;
  }

  /** Opens (creating) the replica database `name`. */
  static async open(name: string, durability: Durability = "crash"): Promise<Store> {
    const db = await openDB<Schema>(name, 5, {
      upgrade(db, oldVersion, _newVersion, tx) {
        if (oldVersion < 1) {
          // No indexes: the key orders records by space, then collection, so
          // key ranges serve both, and every pulled record costs one write.
          db.createObjectStore("records", { keyPath: ["space", "collection", "id"] });
          const outbox = db.createObjectStore("outbox", { keyPath: "n", autoIncrement: true });
          outbox.createIndex("space", "space");
          outbox.createIndex("batch", "batch");
          outbox.createIndex("record", ["space", "collection", "id"]);
          db.createObjectStore("spaces", { keyPath: "space" });
          db.createObjectStore("meta");
          db.createObjectStore("conflicts", { keyPath: "n", autoIncrement: true });
          db.createObjectStore("rejected", { keyPath: "n", autoIncrement: true });
        }
        if (oldVersion < 2) {
          // A report about a field or a deleted record folds into the
          // inbox's entry about it.
          tx.objectStore("conflicts").createIndex("record", ["space", "conflict.collection", "conflict.id"]);
        }
        if (oldVersion < 3) {
          // Fields the app's schema indexes: every record's entries, one
          // key each (see `StoredRecord.ix`).
          tx.objectStore("records").createIndex("ix", "ix", { multiEntry: true });
        }
        if (oldVersion < 4) {
          // Attached and downloaded files (files.ts), by (space, sha256):
          // what is known of each, and apart, its bytes.
          db.createObjectStore("files", { keyPath: ["space", "sha256"] });
          db.createObjectStore("fileBlobs");
        }
        if (oldVersion >= 1 && oldVersion < 5) {
          // Records are kept packed (packed.ts): those stored before are
          // packed once, in the upgrade's own transaction.
          const req = unwrap(tx.objectStore("records")).openCursor();
          req.onsuccess = () => {
            const cursor = req.result;
            if (!cursor) return;
            cursor.update(pack(unpack(cursor.value)));
            cursor.continue();
          };
        }
      },
      blocking() {
        // Another tab runs a newer version of the app: let it upgrade.
        db.close();
      },
    });
    // One client id per browser profile and app, shared by its tabs.
    const tx = db.transaction("meta", "readwrite");
    let clientId = (await tx.store.get("client_id")) as string | undefined;
    if (!clientId) {
      clientId = `web-${randomHex(8)}`;
      await tx.store.put(clientId, "client_id");
    }
    await tx.done;
    return new Store(db, clientId, durability);
  }

  close(): void {
    this.db.close();
  }

  // ---- the app's API: writes and reads --------------------------------

  /**
   * One local write, merged and queued in one transaction; `settles`, a
   * conflict settled by it in the same transaction (a restore, which must
   * make a new record).
   */
  async write(
    space: string,
    collection: string,
    id: string,
    op: core.WriteOp,
    fields: Record<string, unknown> | null,
    settles?: number,
  ): Promise<Changed> {
    checkNames(space, collection, id);
    if (op !== "delete" && (fields === null || typeof fields !== "object" || Array.isArray(fields))) {
      throw new FerryError('fields must be an object, like {"title": "Milk"}', "invalid");
    }
    const tx = this.db.transaction(["records", "outbox", "meta", "spaces", "conflicts"], "readwrite", {
      durability: this.durability === "power-loss" ? "strict" : "relaxed",
    });
    try {
      const records = tx.objectStore("records");
      const [last, stored, known, held, ix] = await Promise.all([
        this.clock(tx.objectStore("meta")),
        records.get([space, collection, id]),
        tx.objectStore("spaces").get(space),
        // Read in the write's transaction: another tab may have fetched a
        // newer schema.
        tx.objectStore("meta").get("app_schema") as Promise<HeldSchema | undefined>,
        tx.objectStore("meta").get("indexes") as Promise<IndexMap | undefined>,
      ]);
      const rec = stored && unpack(stored);
      if (settles !== undefined) {
        if (rec) throw new FerryError(`${collection}/${id} exists; restore into a new id`, "invalid");
        await tx.objectStore("conflicts").delete(settles);
      }
      const hlc = core.hlcTick(last, Date.now());
      const session = (await tx.objectStore("meta").get("session")) as Session | undefined;
      const user = session?.user.id ?? null;
      // A record made here has this user for author (the server records
      // the same); the role is the server's last word (owner of one's own).
      const author: string | null = rec ? (rec.author ?? null) : user;
      const role = user !== null && space === `user:${user}` ? "owner" : known?.role;
      let done;
      try {
        const schema = held?.schema ? JSON.stringify(held.schema) : "";
        // A record held before this replica kept authors: whether its
        // author is this user is for the server to say.
        const actor = user !== null && role && !(rec && author === null) ? { user, role, author } : null;
        done = core.localWrite(rec ?? null, collection, id, op, fields, hlc, schema, actor);
      } catch (e) {
        throw e instanceof FerryError ? e : invalid(e);
      }
      const record = indexed(ix, {
        space,
        collection,
        id,
        fields: done.state.fields,
        deleted: done.state.deleted,
        seen: rec?.seen ?? 1,
        remote: rec?.remote ?? 0,
        ...(author !== null ? { author } : {}),
      });
      await Promise.all([
        tx.objectStore("meta").put(hlc, "hlc"),
        records.put(pack(record)),
        tx.objectStore("outbox").add({ space, collection, id, change: done.change }),
        known ? null : tx.objectStore("spaces").put(newSpace(space)),
        tx.done,
      ]);
      const after = record.deleted === null ? toLocal(record).fields : null;
      return { space, collection, id, source: "local", fields: after };
    } catch (e) {
      abort(tx);
      throw e;
    }
  }

  /** The app's schema this replica judges its writes by (version 0: none). */
  async appSchema(): Promise<HeldSchema> {
    return ((await this.db.get("meta", "app_schema")) as HeldSchema | undefined) ?? { version: 0, schema: null };
  }

  /** Keeps a schema fetched from the server (whose word it is). */
  /**
   * Keeps a schema fetched from the server (whose word it is); when the
   * fields it indexes changed, every record's index entries are written
   * again in the same transaction, so queries never read a half-built
   * index.
   */
  async holdAppSchema(held: HeldSchema): Promise<void> {
    const json = held.schema ? JSON.stringify(held.schema) : "";
    const collections = Object.keys((held.schema as { collections?: object } | null)?.collections ?? {});
    const want: IndexMap = {};
    for (const c of collections) {
      const fields = core.indexedFields(json, c);
      if (fields.length) want[c] = fields;
    }
    const tx = this.db.transaction(["records", "meta"], "readwrite");
    try {
      const meta = tx.objectStore("meta");
      const had = ((await meta.get("indexes")) as IndexMap | undefined) ?? {};
      if (JSON.stringify(had) !== JSON.stringify(want)) {
        let cursor = await tx.objectStore("records").openCursor();
        while (cursor) {
          const before = cursor.value.ix;
          const after = indexed(want, unpack(cursor.value));
          if (JSON.stringify(before) !== JSON.stringify(after.ix)) await cursor.update(pack(after));
          cursor = await cursor.continue();
        }
        await meta.put(want, "indexes");
      }
      await meta.put(held, "app_schema");
      await tx.done;
    } catch (e) {
      abort(tx);
      throw e;
    }
  }

  private async clock(meta: Rw<"meta">): Promise<string> {
    const last = (await meta.get("hlc")) as string | undefined;
    return last ?? core.hlcZero(this.clientId);
  }

  async get(space: string, collection: string, id: string): Promise<LocalRecord | null> {
    checkNames(space, collection, id);
    const rec = await this.db.get("records", [space, collection, id]);
    return rec && rec.deleted === null ? toLocal(rec) : null;
  }

  /** The query run by the core over the collection's live records. */
  async list(space: string, collection: string, query: Query = {}): Promise<LocalRecord[]> {
    checkNames(space, collection);
    const live = await this.liveRecords(space, collection, query);
    const byId = new Map(live.map((r) => [r.id, r]));
    const ids = core.runQuery(query as core.QueryJson, live.map((r) => [r.id, r.fields]));
    return ids.flatMap((id) => byId.get(id) ?? []);
  }

  /**
   * The live records of a collection `query` may select: read through the
   * index of a field it filters on when the schema indexes one, else all
   * of them (the query judges each either way).
   */
  async liveRecords(space: string, collection: string, query: Query = {}): Promise<LocalRecord[]> {
    // One transaction: the index read is the one the plan was made for.
    const tx = this.db.transaction(["meta", "records"]);
    const indexes = (await tx.objectStore("meta").get("indexes")) as IndexMap | undefined;
    const plan = indexes?.[collection] ? core.indexPlan(query as core.QueryJson, indexes[collection]) : null;
    const records = tx.objectStore("records");
    let all: PackedRecord[];
    if (plan) {
      const at = [space, collection, plan.field];
      const pages = await Promise.all(
        plan.ranges.map(([lower, lowerOpen, upper, upperOpen]) =>
          records
            .index("ix")
            .getAll(
              IDBKeyRange.bound(
                lower ? [...at, ...lower] : at,
                upper ? [...at, ...upper] : [...at, []],
                lower ? lowerOpen : false,
                upper ? upperOpen : false,
              ),
            ),
        ),
      );
      all = pages.flat();
    } else {
      all = await records.getAll(within(space, collection));
    }
    return all.filter((r) => r.deleted === null).map(toLocal);
  }

  /** The live fields of each record named (null: deleted or absent), read in one transaction. */
  async fieldsOf(space: string, collection: string, ids: string[]): Promise<(Record<string, unknown> | null)[]> {
    const tx = this.db.transaction("records");
    const got = await Promise.all(ids.map((id) => tx.store.get([space, collection, id])));
    return got.map((r) => (r && r.deleted === null ? toLocal(r).fields : null));
  }

  /**
   * Whether the space's first sync has reached the server's head (a
   * space of this device alone always has).
   */
  async complete(space: string): Promise<boolean> {
    if (isLocal(space)) return true;
    const entry = await this.db.get("spaces", space);
    // Entries from before `complete` existed had synced at least once.
    return entry !== undefined && (entry.complete ?? entry.syncedAt !== null);
  }

  async pending(space?: string): Promise<number> {
    return space === undefined
      ? this.db.count("outbox")
      : this.db.countFromIndex("outbox", "space", space);
  }

  /** The spaces this replica holds or has written to. */
  async spaces(): Promise<string[]> {
    return (await this.db.getAllKeys("spaces")).filter((s) => !isLocal(s));
  }

  /** Starts following `space` (its records are pulled at the next sync). */
  async track(space: string): Promise<void> {
    checkNames(space);
    const tx = this.db.transaction("spaces", "readwrite");
    if (!(await tx.store.get(space))) await tx.store.put(newSpace(space));
    await tx.done;
  }

  async cursor(space: string): Promise<number> {
    return (await this.db.get("spaces", space))?.cursor ?? 0;
  }

  /** The cursor of `space`, and how far its conflict reports were taken. */
  async cursors(space: string): Promise<{ cursor: number; conflictCursor: number }> {
    const entry = await this.db.get("spaces", space);
    const cursor = entry?.cursor ?? 0;
    return { cursor, conflictCursor: entry?.conflictCursor ?? cursor };
  }

  async lastSyncedAt(): Promise<number | null> {
    const all = await this.db.getAll("spaces");
    const times = all.map((s) => s.syncedAt).filter((t): t is number => t !== null);
    return times.length ? Math.max(...times) : null;
  }

  // ---- conflicts and refused changes ----------------------------------

  async conflicts(): Promise<StoredConflict[]> {
    return this.db.getAll("conflicts");
  }

  /**
   * Settles conflict `n`: keep this replica's value (written again with a
   * fresh clock, so it wins), take the server's (nothing to write), or
   * write another value.
   */
  async resolve(n: number, resolution: Resolution): Promise<Changed | null> {
    const stored = await this.db.get("conflicts", n);
    if (!stored) throw new FerryError(`no conflict ${n}`, "invalid");
    const c = stored.conflict;
    let value: { v: unknown } | null = null;
    if ("value" in resolution) value = { v: resolution.value };
    else if (resolution.keep === "mine" && c.yours) value = { v: c.yours.value };
    let changed: Changed | null = null;
    if (c.kind === "record_deleted" && !("keep" in resolution && resolution.keep === "theirs")) {
      throw new FerryError(
        `${c.collection}/${c.id} was deleted; deletes are final: restore what you wrote as a new record (restore), or take the delete`,
        "invalid",
      );
    }
    if (value && c.field) {
      changed = await this.write(stored.space, c.collection, c.id, "patch", { [c.field]: value.v });
      // A pull may store a newer state while the entry below is deleted:
      // live queries read the record instead of taking this one.
      delete changed.fields;
    }
    await this.db.delete("conflicts", n);
    return changed;
  }

  /**
   * Settles `record_deleted` conflict `n` by writing what this replica
   * lost to the delete as a new record `id` (or one made from the deleted
   * id) of the same collection.
   */
  async restore(n: number, id?: string): Promise<Changed> {
    const stored = await this.db.get("conflicts", n);
    if (!stored) throw new FerryError(`no conflict ${n}`, "invalid");
    const c = stored.conflict;
    if (c.kind !== "record_deleted") {
      throw new FerryError(`conflict ${n} is about one field of a live record; resolve it instead`, "invalid");
    }
    const values = core.restorable(c);
    if (Object.keys(values).length === 0) {
      throw new FerryError(`conflict ${n} holds no values to restore; take the delete`, "invalid");
    }
    const newId = id ?? `${c.id.slice(0, 200)}.${randomHex(6)}`;
    // The new record and the settled conflict in one transaction.
    return this.write(stored.space, c.collection, newId, "put", values, n);
  }

  async rejected(): Promise<Rejected[]> {
    return this.db.getAll("rejected");
  }

  async dismissRejected(n: number): Promise<void> {
    await this.db.delete("rejected", n);
  }

  // ---- sync steps ------------------------------------------------------

  /**
   * The batch to send next for `space`: the one sent before and not
   * acknowledged, else the oldest pending changes under a new id.
   */
  async nextBatch(space: string): Promise<{ batchId: string; changes: Change[] } | null> {
    const tx = this.db.transaction(["outbox", "spaces", "records"], "readwrite");
    const outbox = tx.objectStore("outbox");
    const entry = await tx.objectStore("spaces").get(space);
    // A resync pulls the whole space before anything is sent, so that no
    // change reaches the server before the replica knows which of its
    // records the server deleted; then it sends only the batch stamped
    // before it.
    if (entry?.resync && !entry.sending) {
      await tx.done;
      return null;
    }
    // A stamped batch is always the oldest changes of its space (changes
    // are stamped oldest first, and a batch leaves before the next is
    // stamped), so the oldest MAX_BATCH hold it whole.
    const entries = await outbox.index("space").getAll(space, MAX_BATCH);
    if (!entry?.resync && entry?.syncedAt === null && entries.length > 0) {
      // A first sync with changes waiting pulls first, as after a 410: a
      // batch of this replica may have reached the server unanswered and
      // its records been deleted and compacted there since.
      await startOver(tx.objectStore("records"), tx.objectStore("spaces"), space);
      await tx.done;
      return null;
    }
    let stamped = entries.find((e) => e.batch !== undefined)?.batch;
    let batch: OutboxEntry[];
    if (stamped !== undefined) {
      batch = entries.filter((e) => e.batch === stamped);
    } else {
      batch = entries;
      if (batch.length === 0 || entry?.sending) {
        await tx.done;
        return null;
      }
      stamped = `b${randomHex(12)}`;
      for (const e of batch) e.batch = stamped;
      await Promise.all(batch.map((e) => outbox.put(e)));
    }
    await tx.done;
    batch.sort((a, b) => (a.n ?? 0) - (b.n ?? 0));
    return { batchId: stamped, changes: batch.map((e) => e.change) };
  }

  /** Stores the server's answer to a sync of `space` that sent `batch`. */
  async storeAnswer(space: string, batch: string | null, answer: SyncAnswer): Promise<Stored> {
    const tx = this.db.transaction(["outbox", "conflicts", "records", "meta", "spaces"], "readwrite");
    const out: Stored = { pushed: 0, pulled: 0, conflicts: 0, resynced: false, changed: [], pending: false };
    try {
      await stillSignedIn(tx.objectStore("meta"), tx.objectStore("spaces"), space);
      const work: Promise<unknown>[] = [];
      const outbox = tx.objectStore("outbox");
      const conflicts = tx.objectStore("conflicts");
      if (batch !== null) {
        const acked = await outbox.index("batch").getAll(batch);
        out.pushed = acked.length;
        for (const e of acked) {
          await outbox.delete(e.n as number);
          const rec = await tx.objectStore("records").get([space, e.collection, e.id]);
          if (rec && rec.remote !== 1) await tx.objectStore("records").put({ ...rec, remote: 1 });
        }
      }
      const at = Date.now();
      // Reports first, against the records as they were before this page.
      for (const conflict of [...answer.conflicts, ...(answer.reported ?? [])]) {
        if (await takeConflict(conflicts, tx.objectStore("records"), space, conflict, this.clientId, at)) {
          out.conflicts += 1;
        }
      }
      // What the replica held of the records this page deletes.
      const before = new Map<string, StoredRecord>();
      for (const r of answer.changes) {
        if (r.deleted === null) continue;
        const local = await tx.objectStore("records").get([space, r.collection, r.id]);
        if (local && local.deleted === null) before.set(JSON.stringify([r.collection, r.id]), unpack(local));
      }
      const records = unwrap(tx.objectStore("records"));
      const known = this.known.get(space) ?? (await tx.objectStore("spaces").get(space))?.resync === true;
      const ix = (await tx.objectStore("meta").get("indexes")) as IndexMap | undefined;
      const existed = await (known ? mergeEach : addEach)(records, space, answer.changes, ix);
      this.known.set(space, existed * 2 > answer.changes.length);
      for (const r of answer.changes) out.changed.push({ space, collection: r.collection, id: r.id, source: "remote" });
      out.pulled = answer.changes.length;
      // A pulled delete drops the pending changes to its record (sent after
      // the server compacted the tombstone, they would bring it back), kept
      // in the inbox as lost to the delete.
      for (const r of answer.changes) {
        const local = before.get(JSON.stringify([r.collection, r.id]));
        if (!local) continue;
        const lost = { collection: r.collection, id: r.id, deleted: r.deleted, local };
        if (await lostToDelete(outbox, conflicts, space, lost, this.clientId, at)) out.conflicts += 1;
      }
      const hlc = core.hlcObserve(await this.clock(tx.objectStore("meta")), answer.hlc, Date.now());
      work.push(tx.objectStore("meta").put(hlc, "hlc"));
      const spaces = tx.objectStore("spaces");
      const entry = (await spaces.get(space)) ?? newSpace(space);
      if (!answer.has_more && entry.resync) {
        const records = tx.objectStore("records");
        out.conflicts += await dropGone(records, outbox, conflicts, space, this.clientId, at, out.changed);
        const stamped = (await outbox.index("space").getAll(space, MAX_BATCH)).some((e) => e.batch !== undefined);
        if (stamped) {
          entry.sending = true;
        } else {
          out.resynced = true;
          out.changed.push(...(await finishResync(records, outbox, space)));
          entry.resync = false;
          entry.sending = false;
        }
      }
      const conflictCursor = Math.max(entry.conflictCursor ?? entry.cursor, answer.cursor);
      const complete = entry.complete === true || !answer.has_more;
      const role = answer.role ?? entry.role;
      work.push(spaces.put({ ...entry, cursor: answer.cursor, conflictCursor, syncedAt: at, complete, role }));
      await Promise.all(work);
      out.pending = (await outbox.index("space").count(space)) > 0;
      await tx.done;
    } catch (e) {
      abort(tx);
      throw e;
    }
    return out;
  }

  /**
   * Removes the bases of the changes of `batch` (for a server that takes
   * none); the batch keeps its id, since the server applied nothing of it.
   */
  async stripBases(space: string, batch: string): Promise<void> {
    const tx = this.db.transaction("outbox", "readwrite");
    for (const e of await tx.store.index("batch").getAll(batch)) {
      if (e.space !== space) continue;
      const change = { ...e.change };
      delete change.base;
      await tx.store.put({ ...e, change });
    }
    await tx.done;
  }

  /** Whether changes of `space` wait in the outbox. */
  async hasPending(space: string): Promise<boolean> {
    return (await this.db.countFromIndex("outbox", "space", space)) > 0;
  }

  /**
   * Starts pulling `space` again from 0 (after `410 cursor_expired`);
   * records the pull does not bring back are dropped at its end, unless
   * changes to them are pending.
   */
  async beginResync(space: string): Promise<void> {
    const tx = this.db.transaction(["records", "spaces"], "readwrite");
    await startOver(tx.objectStore("records"), tx.objectStore("spaces"), space);
    await tx.done;
  }

  /**
   * Moves the changes of `batch`, which the server refused for good, from
   * the outbox to the rejected list and restores the server's copy of the
   * records they touched (dropped here, then pulled again from 0).
   */
  async rejectBatch(space: string, batch: string, error: FerryError): Promise<{ count: number; changed: Changed[] }> {
    const tx = this.db.transaction(["outbox", "rejected", "records", "spaces", "meta"], "readwrite");
    try {
      await stillSignedIn(tx.objectStore("meta"), tx.objectStore("spaces"), space);
    } catch (e) {
      abort(tx);
      throw e;
    }
    const outbox = tx.objectStore("outbox");
    let entries = (await outbox.index("batch").getAll(batch)).filter((e) => e.space === space);
    entries.sort((a, b) => (a.n ?? 0) - (b.n ?? 0));
    // The change the server named (`details.index`), when it named one:
    // every pending change to its record (of this batch, and those queued
    // after it, made over the refused one) is set aside, so that the
    // record is the server's copy again; the rest of the batch goes again.
    // Else the whole batch.
    const index = error.details?.index;
    const named = typeof index === "number" && Number.isInteger(index) ? entries[index] : undefined;
    if (named) {
      const pending = await outbox.index("record").getAll([space, named.collection, named.id]);
      entries = pending.filter((e) => e.batch === batch || e.batch === undefined);
    }
    const changed: Changed[] = [];
    const at = Date.now();
    for (const e of entries) {
      await outbox.delete(e.n as number);
      await tx
        .objectStore("rejected")
        .add({ space, change: e.change, code: error.code, message: error.message, at } as Rejected);
    }
    for (const e of entries) {
      const key: [string, string, string] = [space, e.collection, e.id];
      if (!(await pendingFor(outbox, key)) && (await tx.objectStore("records").get(key))) {
        await tx.objectStore("records").delete(key);
        changed.push({ space, collection: e.collection, id: e.id, source: "remote" });
      }
    }
    await startOver(tx.objectStore("records"), tx.objectStore("spaces"), space);
    await tx.done;
    return { count: entries.length, changed };
  }

  // ---- the session -----------------------------------------------------

  async session(): Promise<Session | null> {
    return ((await this.db.get("meta", "session")) as Session | undefined) ?? null;
  }

  /** Stores new tokens for the signed-in user. */
  async setTokens(accessToken: string, refreshToken: string | null, expiresAt: number | null): Promise<void> {
    const tx = this.db.transaction("meta", "readwrite");
    const s = (await tx.store.get("session")) as Session | undefined;
    if (s) await tx.store.put({ ...s, accessToken, refreshToken, expiresAt }, "session");
    await tx.done;
  }

  /**
   * Signs `session.user` in: refuses when another user is signed in, and
   * moves the anonymous records and pending changes into the user's
   * personal space.
   */
  async startSession(session: Session): Promise<Changed[]> {
    const personal = `user:${session.user.id}`;
    const tx = this.db.transaction(ALL, "readwrite");
    const changed: Changed[] = [];
    try {
      const meta = tx.objectStore("meta");
      const current = (await meta.get("session")) as Session | undefined;
      if (current && current.user.id !== session.user.id) {
        throw new FerryError(
          `${current.user.email ?? current.user.id} is signed in here; sign them out first`,
          "invalid",
        );
      }
      await meta.put(session, "session");
      const records = tx.objectStore("records");
      const ix = (await meta.get("indexes")) as IndexMap | undefined;
      for (const rec of (await records.getAll(within(ANONYMOUS_SPACE))).map(unpack)) {
        const held = await records.get([personal, rec.collection, rec.id]);
        const mine = held && unpack(held);
        const state = mine ? core.mergeRecord(mine, rec) : { fields: rec.fields, deleted: rec.deleted };
        await records.put(
          pack(indexed(ix, {
            fields: state.fields,
            deleted: state.deleted,
            space: personal,
            collection: rec.collection,
            id: rec.id,
            seen: mine?.seen ?? 1,
            remote: mine?.remote ?? 0,
          })),
        );
        await records.delete([ANONYMOUS_SPACE, rec.collection, rec.id]);
        changed.push({ space: ANONYMOUS_SPACE, collection: rec.collection, id: rec.id, source: "local" });
        changed.push({ space: personal, collection: rec.collection, id: rec.id, source: "local" });
      }
      const outbox = tx.objectStore("outbox");
      for (const e of await outbox.index("space").getAll(ANONYMOUS_SPACE)) {
        await outbox.put({ ...e, space: personal });
      }
      // Files attached before sign-in are the user's now, and upload.
      const files = tx.objectStore("files");
      const blobs = tx.objectStore("fileBlobs");
      for (const f of await files.getAll(within(ANONYMOUS_SPACE))) {
        // Queued in the user's space whatever it held of the same bytes
        // (asking by hash first makes a held file cheap).
        const blob = await blobs.get([ANONYMOUS_SPACE, f.sha256]);
        if (blob) {
          await blobs.put(blob, [personal, f.sha256]);
          const { missing: _, error: __, ...rest } = f;
          await files.put({ ...rest, space: personal, held: 1, upload: "queued" });
        }
        await files.delete([ANONYMOUS_SPACE, f.sha256]);
        await blobs.delete([ANONYMOUS_SPACE, f.sha256]);
      }
      const spaces = tx.objectStore("spaces");
      await spaces.delete(ANONYMOUS_SPACE);
      if (!(await spaces.get(personal))) await spaces.put(newSpace(personal));
      await tx.done;
    } catch (e) {
      abort(tx);
      throw e;
    }
    return changed;
  }

  /**
   * Ends the session locally. With `wipe`, every record, pending change,
   * conflict and cursor goes too; returns how many pending changes a wipe
   * discarded.
   */
  async endSession(wipe: boolean): Promise<number> {
    const tx = this.db.transaction(ALL, "readwrite");
    const discarded = wipe ? await tx.objectStore("outbox").count() : 0;
    await tx.objectStore("meta").delete("session");
    let renewed: string | null = null;
    if (wipe) {
      for (const name of ["records", "outbox", "spaces", "conflicts", "rejected", "files", "fileBlobs"] as const) {
        await tx.objectStore(name).clear();
      }
      renewed = `web-${randomHex(8)}`;
      const meta = tx.objectStore("meta");
      const last = (await meta.get("hlc")) as string | undefined;
      await meta.put(renewed, "client_id");
      if (last) await meta.put(core.hlcRebase(last, renewed), "hlc");
    }
    await tx.done;
    if (renewed) this.id = renewed;
    return discarded;
  }
}

function abort(tx: { abort(): void; done: Promise<void> }): void {
  // The transaction's own promise rejects on abort; that is expected here.
  tx.done.catch(() => undefined);
  try {
    tx.abort();
  } catch {
    // Already finished or aborted.
  }
}

/**
 * Refuses to store what a sync brought back once its session ended: a
 * sign-out (in any tab) may wipe the replica while an answer is on its way,
 * and the next person on the device must not find it stored afterwards.
 * Checked inside the storing transaction, so the two never interleave.
 */
async function stillSignedIn(meta: Rw<"meta">, spaces: Rw<"spaces">, space: string): Promise<void> {
  const [session, tracked] = await Promise.all([meta.get("session"), spaces.get(space)]);
  if (!session || !tracked) {
    throw new FerryError(`${space} is no longer synced here (signed out)`, "signed_out");
  }
}

function toLocal(r: StoredRecord | PackedRecord): LocalRecord {
  return { space: r.space, collection: r.collection, id: r.id, fields: valuesOf(r) };
}

/**
 * Stores a pulled page, each record first added as sent: all that a record
 * new to the replica costs (the common case: a first sync). Only when one
 * is already there (the add fails, and the failure is caught so that the
 * transaction goes on) is it read, merged with the local one by the core,
 * and written. Every request is sent at once and answered in order.
 * Resolves to how many records were already there.
 */
function addEach(records: IDBObjectStore, space: string, page: ServerRecord[], ix?: IndexMap): Promise<number> {
  return eachRecord(page, (r, done, fail) => {
    const add = records.add(pack(mergePulled(space, undefined, r, ix)));
    add.onsuccess = () => done(false);
    add.onerror = (event) => {
      if (add.error?.name !== "ConstraintError") return fail(add.error);
      event.preventDefault();
      event.stopPropagation();
      mergeOne(records, space, r, ix, () => done(true), fail);
    };
  });
}

/**
 * Stores a pulled page whose records are mostly here already (a resync,
 * updates of known records): each is read, merged and written.
 */
function mergeEach(records: IDBObjectStore, space: string, page: ServerRecord[], ix?: IndexMap): Promise<number> {
  return eachRecord(page, (r, done, fail) => mergeOne(records, space, r, ix, done, fail));
}

function mergeOne(
  records: IDBObjectStore,
  space: string,
  r: ServerRecord,
  ix: IndexMap | undefined,
  done: (existed: boolean) => void,
  fail: (e: unknown) => void,
): void {
  const get = records.get([space, r.collection, r.id]);
  get.onerror = () => fail(get.error);
  get.onsuccess = () => {
    try {
      const held = get.result as PackedRecord | undefined;
      const local = held && unpack(held);
      const put = records.put(pack(mergePulled(space, local, r, ix)));
      put.onsuccess = () => done(local !== undefined);
      put.onerror = () => fail(put.error);
    } catch (e) {
      fail(e);
    }
  };
}

/** Runs `step` for every record at once; resolves when all are done. */
function eachRecord(
  page: ServerRecord[],
  step: (r: ServerRecord, done: (existed: boolean) => void, fail: (e: unknown) => void) => void,
): Promise<number> {
  return new Promise((resolve, reject) => {
    let left = page.length;
    let existed = 0;
    if (left === 0) return resolve(0);
    const done = (was: boolean) => {
      if (was) existed += 1;
      left -= 1;
      if (left === 0) resolve(existed);
    };
    for (const r of page) step(r, done, reject);
  });
}

/** A pulled record folded into the local one; a new one is stored as sent. */
function mergePulled(space: string, local: StoredRecord | undefined, r: ServerRecord, ix?: IndexMap): StoredRecord {
  const state = local ? core.mergeRecord(local, r) : { fields: r.fields, deleted: r.deleted };
  const merged = { space, collection: r.collection, id: r.id, fields: state.fields, deleted: state.deleted };
  const author = r.author ?? local?.author;
  return indexed(ix, { ...merged, seen: 1, remote: 1, ...(author !== undefined ? { author } : {}) });
}

/** `rec` with its index entries, for the fields `ix` names for its collection. */
function indexed(ix: IndexMap | undefined, rec: StoredRecord): StoredRecord {
  const fields = ix?.[rec.collection];
  if (!fields?.length || rec.deleted !== null) {
    delete rec.ix;
    return rec;
  }
  const entries = core.indexEntries(fields, toLocal(rec).fields);
  rec.ix = entries.map((e) => [rec.space, rec.collection, ...e]);
  return rec;
}

/** A space's entry before its first sync (or a resync from 0). */
function newSpace(space: string, resync = false): SpaceEntry {
  return { space, cursor: 0, resync, syncedAt: null };
}

/**
 * Pulls `space` again from 0: its records are marked unseen, and those
 * still unseen when the pull ends are dropped (`finishResync`).
 */
async function startOver(records: Rw<"records">, spaces: Rw<"spaces">, space: string): Promise<void> {
  let cursor = await records.openCursor(within(space));
  while (cursor) {
    await cursor.update({ ...cursor.value, seen: 0 });
    cursor = await cursor.continue();
  }
  // The reports taken so far stay taken: the pull from 0 does not bring
  // them again.
  const old = await spaces.get(space);
  const conflictCursor = Math.max(old?.conflictCursor ?? 0, old?.cursor ?? 0);
  await spaces.put({ ...newSpace(space, true), conflictCursor, complete: old?.complete });
}

/** Whether local changes to the record at `key` wait in the outbox. */
async function pendingFor(outbox: Rw<"outbox">, key: [string, string, string]): Promise<boolean> {
  return (await outbox.index("record").count(key)) > 0;
}

/**
 * Puts a conflict the server reported into the inbox, unless the record
 * shows it settled by this replica's own later write; a report about a
 * field or deleted record the inbox holds folds into that entry. Whether
 * the inbox took it.
 */
async function takeConflict(
  conflicts: Rw<"conflicts">,
  records: Rw<"records">,
  space: string,
  conflict: Conflict,
  me: string,
  at: number,
): Promise<boolean> {
  const key: [string, string, string] = [space, conflict.collection, conflict.id];
  const stored = await records.get(key);
  const local = stored ? unpack(stored) : null;
  const held = await conflicts.index("record").getAll(key);
  const take = core.inboxTake(
    held.map((h) => h.conflict),
    conflict,
    local,
    me,
  );
  if ("skip" in take) return false;
  if ("fold" in take) {
    await conflicts.put({ ...held[take.fold], conflict: take.conflict, at });
  } else {
    await conflicts.add({ space, conflict, at } as StoredConflict);
  }
  return true;
}

/**
 * A record this replica held as `local` was deleted on the server (at
 * `deleted`, when known): its pending changes are dropped (sent after the
 * server compacted the tombstone, they would bring it back; one in a
 * stamped batch may go too: the server applied that batch whole or not at
 * all, and answers it again from its record when sent again), and what
 * they wrote, with the inbox's reports about the record, becomes one
 * `record_deleted` entry. Whether changes were lost here.
 */
async function lostToDelete(
  outbox: Rw<"outbox">,
  conflicts: Rw<"conflicts">,
  space: string,
  gone: { collection: string; id: string; deleted: string | null; local: RecordState },
  me: string,
  at: number,
): Promise<boolean> {
  const key: [string, string, string] = [space, gone.collection, gone.id];
  const pending = await outbox.index("record").getAll(key);
  for (const e of pending) await outbox.delete(e.n as number);
  const dropped = pending.sort((a, b) => (a.n ?? 0) - (b.n ?? 0)).map((e) => e.change);
  const held = await conflicts.index("record").getAll(key);
  if (dropped.length === 0 && held.length === 0) return false;
  const kept = core.deletedUnder(
    gone.collection,
    gone.id,
    dropped,
    held.map((h) => h.conflict),
    gone.deleted,
    gone.local,
    me,
  );
  // The first entry about the record stays (its number is the app's
  // handle), holding the gathered report.
  const [first, ...rest] = held;
  for (const h of rest) await conflicts.delete(h.n);
  if (kept && first) await conflicts.put({ ...first, conflict: kept, at });
  else if (kept) await conflicts.add({ space, conflict: kept, at } as StoredConflict);
  else if (first) await conflicts.delete(first.n);
  return kept !== null && dropped.length > 0;
}

/**
 * At the end of a resync's pull: the records the server had and did not
 * send again were deleted there and their tombstones compacted, so they go
 * with their pending changes (the delete wins). Returns the conflicts made.
 */
async function dropGone(
  records: Rw<"records">,
  outbox: Rw<"outbox">,
  conflicts: Rw<"conflicts">,
  space: string,
  me: string,
  at: number,
  changed: Changed[],
): Promise<number> {
  let made = 0;
  const gone: StoredRecord[] = [];
  let cursor = await records.openCursor(within(space));
  while (cursor) {
    const r = cursor.value;
    if (r.seen === 0) {
      const remote = r.remote ?? ((await pendingFor(outbox, [space, r.collection, r.id])) ? 0 : 1);
      if (remote === 1) gone.push(unpack(r));
    }
    cursor = await cursor.continue();
  }
  for (const r of gone) {
    await records.delete([space, r.collection, r.id]);
    // The delete itself is forgotten: when it happened is unknown.
    const lost = { collection: r.collection, id: r.id, deleted: null, local: r };
    if (await lostToDelete(outbox, conflicts, space, lost, me, at)) made += 1;
    changed.push({ space, collection: r.collection, id: r.id, source: "remote" });
  }
  return made;
}

/** Drops the records a full resync did not see again, unless pending. */
async function finishResync(records: Rw<"records">, outbox: Rw<"outbox">, space: string): Promise<Changed[]> {
  const changed: Changed[] = [];
  let cursor = await records.openCursor(within(space));
  while (cursor) {
    const r = cursor.value;
    if (r.seen === 0) {
      if (!(await pendingFor(outbox, [space, r.collection, r.id]))) {
        await cursor.delete();
        changed.push({ space, collection: r.collection, id: r.id, source: "remote" });
      } else {
        await cursor.update({ ...r, seen: 1 });
      }
    }
    cursor = await cursor.continue();
  }
  return changed;
}
