// The wasm build of ferry-core: names, the clock and the merge, exactly as
// the server runs them. Everything here is a thin typed wrapper; no merge
// rule is written in TypeScript.

import init, * as wasm from "../wasm/ferry_wasm.js";

import { FerryError } from "./types.js";
import type { Change, Conflict, Fields, FileRef, RecordState } from "./types.js";

let ready: Promise<void> | null = null;

/** Loads the wasm module once (fetched beside the bundle). */
export function loadCore(wasmUrl?: string | URL): Promise<void> {
  if (!ready) {
    ready = init(wasmUrl ? { module_or_path: wasmUrl } : undefined).then(() => undefined);
  }
  return ready;
}

export type NameKind = "space" | "collection" | "record" | "field" | "client";

/** Throws an Error naming what is wrong when `value` is not a valid name. */
export function checkName(kind: NameKind, value: string): void {
  if (typeof value !== "string") throw new TypeError(`${kind} must be a string`);
  wasm.checkName(kind, value);
}

export function hlcZero(node: string): string {
  return wasm.hlcZero(node);
}

export function hlcTick(last: string, nowMs: number): string {
  return wasm.hlcTick(last, nowMs);
}

/** `last` at the same time, stamped by node `node`. */
export function hlcRebase(last: string, node: string): string {
  return wasm.hlcRebase(last, node);
}

export function hlcObserve(last: string, remote: string, nowMs: number): string {
  return wasm.hlcObserve(last, remote, nowMs);
}

export type WriteOp = "put" | "patch" | "delete";

/** One local write checked and merged by ferry-core. */
export function localWrite(
  state: RecordState | null,
  collection: string,
  id: string,
  op: WriteOp,
  fields: Record<string, unknown> | null,
  hlc: string,
  schema = "",
  actor: { user: string; role: string; author: string | null } | null = null,
): { change: Change; state: RecordState } {
  const out = JSON.parse(
    wasm.localWrite(
      state ? JSON.stringify(state) : "",
      collection,
      id,
      op,
      fields === null ? "" : JSON.stringify(fields),
      hlc,
      schema,
      actor ? JSON.stringify(actor) : "",
    ),
  );
  if (out.violation) throw new FerryError(out.message, "schema", null, null, out.violation);
  if (out.forbidden) throw new FerryError(out.message, "forbidden", null, null, out.forbidden);
  return out;
}

/** The protocol version this client speaks (the `Ferry-Protocol` header). */
export function protocolVersion(): string {
  return wasm.protocolVersion();
}

/** The state after seeing both `ours` and a pulled record. */
export function mergeRecord(ours: RecordState, theirs: { fields: Fields; deleted: string | null }): RecordState {
  return JSON.parse(
    wasm.mergeRecord(
      JSON.stringify({ fields: ours.fields, deleted: ours.deleted }),
      JSON.stringify({ fields: theirs.fields, deleted: theirs.deleted }),
    ),
  );
}

/** How the inbox takes a reported conflict (see ferry-core's `conflict`). */
export type Take = { skip: true } | { fold: number; conflict: Conflict } | { add: true };

/**
 * How an inbox holding `held` (its entries about the same record) takes
 * `incoming`, given the record's local state and this replica's id.
 */
export function inboxTake(held: Conflict[], incoming: Conflict, local: RecordState | null, me: string): Take {
  return JSON.parse(
    wasm.inboxTake(JSON.stringify(held), JSON.stringify(incoming), local ? JSON.stringify(local) : "", me),
  );
}

/**
 * The one `record_deleted` entry kept for a record found deleted (at
 * `deleted`, when known): from the pending changes dropped and the inbox's
 * entries about the record; null when nothing of this replica's is lost.
 */
export function deletedUnder(
  collection: string,
  id: string,
  dropped: Change[],
  held: Conflict[],
  deleted: string | null,
  local: RecordState | null,
  me: string,
): Conflict | null {
  return JSON.parse(
    wasm.deletedUnder(
      collection,
      id,
      JSON.stringify(dropped),
      JSON.stringify(held),
      deleted ?? "",
      local ? JSON.stringify({ fields: local.fields, deleted: local.deleted }) : "",
      me,
    ),
  );
}

/** What a `record_deleted` conflict holds of this replica's lost writes, as values to write. */
export function restorable(conflict: Conflict): Record<string, unknown> {
  return JSON.parse(wasm.restorable(JSON.stringify(conflict)));
}

/** A query's JSON form as the core reads it (`where`, `orderBy`, `limit`, `offset`). */
export type QueryJson = Record<string, unknown>;

/** Throws a `FerryError` (`invalid`) carrying the core's reason. */
function refused(e: unknown): never {
  throw new FerryError(e instanceof Error ? e.message : String(e), "invalid");
}

/** `query` run once over `records` (each `[id, fields]`): the ids of its result, in order. */
export function runQuery(query: QueryJson, records: [string, Record<string, unknown>][]): string[] {
  try {
    return JSON.parse(wasm.runQuery(JSON.stringify(query), JSON.stringify(records)));
  } catch (e) {
    refused(e);
  }
}

/** What a live query's window did since last asked. */
export type WindowChange =
  | { reset: string[] }
  | { splices: (["-", number] | ["+", number, string] | ["=", number, string])[] };

/** The engines of a tab's live queries (ferry-core's `LiveQuery`), one per watched query. */
export class LiveEngines {
  private readonly inner = new wasm.LiveQueries();

  /** A new engine for `query`; throws a `FerryError` for a query that is not one. */
  open(query: QueryJson): number {
    try {
      return this.inner.open(JSON.stringify(query));
    } catch (e) {
      refused(e);
    }
  }

  close(handle: number): void {
    this.inner.close(handle);
  }

  /** Loads an engine; returns the positions in `records` of those that match. */
  load(handle: number, records: [string, Record<string, unknown>][]): number[] {
    return JSON.parse(this.inner.load(handle, JSON.stringify(records)));
  }

  /** One record's new fields (null: deleted or gone) into `handles`; whether any matches it. */
  apply(handles: Uint32Array, id: string, fields: Record<string, unknown> | null): boolean {
    return this.inner.apply(handles, id, fields === null ? "" : JSON.stringify(fields));
  }

  take(handle: number): WindowChange | null {
    return JSON.parse(this.inner.take(handle));
  }

  /** Frees the engines' wasm memory; nothing may be asked after. */
  free(): void {
    this.inner.free();
  }
}

/** The fields of `collection` the schema (JSON, `""`: none) marks `index = true`. */
export function indexedFields(schema: string, collection: string): string[] {
  return JSON.parse(wasm.indexedFields(schema, collection));
}

/** A record's index entries (`[field, kind, value?]` each) for the `indexed` fields. */
export function indexEntries(indexed: string[], fields: Record<string, unknown>): unknown[][] {
  return JSON.parse(wasm.indexEntries(JSON.stringify(indexed), JSON.stringify(fields)));
}

/** One key range of an index plan: lower, lower left out, upper, upper left out (a null bound: open). */
export type PlanRange = [unknown[] | null, boolean, unknown[] | null, boolean];

/** How `query` reads through the index of one of `indexed` (null: a scan). */
export function indexPlan(query: QueryJson, indexed: string[]): { field: string; ranges: PlanRange[] } | null {
  try {
    return JSON.parse(wasm.indexPlan(JSON.stringify(query), JSON.stringify(indexed)));
  } catch (e) {
    refused(e);
  }
}

/** How much of a file is read and hashed at a time. */
const HASH_PIECE = 4 * 1024 * 1024;

/** A SHA-256 fed piece by piece (ferry-core's, in wasm); `finish` frees it. */
export class Hasher {
  private readonly inner = new wasm.FileHasher();

  update(bytes: Uint8Array): void {
    this.inner.update(bytes);
  }

  /** The hash as 64 lowercase hex digits. */
  finish(): string {
    try {
      return this.inner.finish();
    } finally {
      this.inner.free();
    }
  }

  /** Frees it unfinished. */
  free(): void {
    this.inner.free();
  }
}

/** The SHA-256 of a blob's bytes (64 lowercase hex digits), read a piece at a time. */
export async function hashBlob(blob: Blob): Promise<string> {
  const hasher = new Hasher();
  try {
    for (let at = 0; at < blob.size; at += HASH_PIECE) {
      hasher.update(new Uint8Array(await blob.slice(at, at + HASH_PIECE).arrayBuffer()));
    }
  } catch (e) {
    hasher.free();
    throw e;
  }
  return hasher.finish();
}

/** A file reference checked by the core, in its one shape; throws a `FerryError` (`invalid`). */
export function fileRef(value: unknown): FileRef {
  try {
    return JSON.parse(wasm.fileRef(JSON.stringify(value))) as FileRef;
  } catch (e) {
    refused(e);
  }
}
