// Live queries in the browser (docs/live-queries.md): a query watched keeps
// its result current as this tab, other tabs and pulls write.
//
// Each watched query has an engine in the wasm core (ferry-core's
// `LiveQuery`) that holds the sort keys of its matching records and says,
// for each changed record, what its window did. Changes are gathered for a
// tick and applied together: one new result per query, whatever the
// number of changes. Rows are frozen objects kept per record while its
// state is unchanged, so a row that did not change is the same object in
// the next result and frameworks skip it. Loads and updates run one after
// another on one chain, so an update never sees a half-loaded query.

import * as core from "./core.js";
import type { Store } from "./store.js";
import { type Changed, FerryError, type LocalRecord, type Query, type QueryResult } from "./types.js";

type Fields = Record<string, unknown>;

/**
 * A watched query: the shape React's `useSyncExternalStore` and Svelte's
 * stores take. Watching the same query twice shares it.
 */
export interface LiveQuery<R = LocalRecord> {
  /** Hears each new result (not the current one); returns the unsubscribe. */
  subscribe(listener: (result: QueryResult<R>) => void): () => void;
  /** The current result: the same object until something in it changes. */
  getSnapshot(): QueryResult<R>;
}

const LOADING: QueryResult = Object.freeze({ rows: Object.freeze([]), status: "loading" });

/** Whether a live query has been read (its result is no longer the placeholder). */
export function isRead(q: LiveQuery<unknown>): boolean {
  return q.getSnapshot() !== LOADING;
}

/** The watched queries over one collection of one space, and the rows they show. */
interface Group {
  space: string;
  collection: string;
  /** Queries whose engine is loaded. */
  loaded: Set<Watched>;
  /** One frozen row per record that matches a loaded query. */
  rows: Map<string, LocalRecord>;
}

/** What an app holds of a live query: it finds the query by its key, so it works again after a release. */
class Handle implements LiveQuery {
  constructor(
    private readonly owner: LiveQueries,
    readonly key: string,
    readonly space: string,
    readonly collection: string,
    readonly query: Query,
  ) {}

  subscribe(listener: (r: QueryResult) => void): () => void {
    const w = this.owner.entry(this);
    w.listeners.add(listener);
    this.owner.start(w);
    return () => {
      w.listeners.delete(listener);
      if (w.listeners.size === 0) this.owner.release(w);
    };
  }

  getSnapshot(): QueryResult {
    return this.owner.snapshot(this.key);
  }
}

/** A query someone subscribes to: its engine, result and listeners. */
class Watched {
  engine: number | null = null;
  result: QueryResult = LOADING;
  readonly listeners = new Set<(r: QueryResult) => void>();
  started = false;

  constructor(
    readonly handle: Handle,
    readonly group: Group,
  ) {}

  get key(): string {
    return this.handle.key;
  }

  get query(): Query {
    return this.handle.query;
  }

  publish(result: QueryResult): void {
    if (result === this.result) return;
    this.result = result;
    for (const l of [...this.listeners]) l(result);
  }
}

/** Whether two records' fields hold the same values. */
function sameFields(a: Fields, b: Fields): boolean {
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((k) => {
    const [x, y] = [a[k], b[k]];
    if (x === y) return true;
    return typeof x === "object" && typeof y === "object" && JSON.stringify(x) === JSON.stringify(y);
  });
}

function frozenRow(space: string, collection: string, id: string, fields: Fields): LocalRecord {
  return Object.freeze({ space, collection, id, fields: Object.freeze(fields) });
}

/** A tab's live queries. */
export class LiveQueries {
  private readonly engines = new core.LiveEngines();
  private readonly watched = new Map<string, Watched>();
  private readonly groups = new Map<string, Group>();
  /** Whether each space's first sync is done, as last read. */
  private readonly complete = new Map<string, boolean>();
  private queue: Changed[] = [];
  private scheduled = false;
  private chain: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(private readonly store: Store) {}

  /** The live query of `query` over a collection (shared while it is watched). */
  query(space: string, collection: string, query: Query = {}): LiveQuery {
    const key = JSON.stringify([space, collection, query]);
    return this.watched.get(key)?.handle ?? new Handle(this, key, space, collection, query);
  }

  /** The watched query of `handle`, made when none is. */
  entry(handle: Handle): Watched {
    let w = this.watched.get(handle.key);
    if (!w) {
      const groupKey = JSON.stringify([handle.space, handle.collection]);
      let group = this.groups.get(groupKey);
      if (!group) {
        group = { space: handle.space, collection: handle.collection, loaded: new Set(), rows: new Map() };
        this.groups.set(groupKey, group);
      }
      w = new Watched(handle, group);
      this.watched.set(handle.key, w);
    }
    return w;
  }

  snapshot(key: string): QueryResult {
    return this.watched.get(key)?.result ?? LOADING;
  }

  /** Records changed (this tab, another tab, a pull): updated at the end of the tick. */
  changed(changes: Changed[]): void {
    if (this.watched.size === 0 || changes.length === 0) return;
    this.queue.push(...changes);
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.run(() => this.flush());
    });
  }

  /** A sync finished a round: spaces still loading may be complete now. */
  synced(): void {
    const waiting = [...this.watched.values()].some((w) => this.complete.get(w.group.space) === false);
    if (waiting) this.run(() => this.recheck());
  }

  /** The replica changed under every query (a sign-in or a wipe): read them all again. */
  reloadAll(): void {
    this.complete.clear();
    for (const w of this.watched.values()) {
      if (w.started) this.run(() => this.load(w));
    }
  }

  /** Frees every engine (the replica is closing). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.watched.clear();
    this.groups.clear();
    this.queue = [];
    // After any work under way.
    void this.chain.then(() => this.engines.free());
  }

  /** Resolves when every change heard so far is in the results. */
  async settled(): Promise<void> {
    while (this.scheduled) await Promise.resolve();
    await this.chain;
  }

  start(w: Watched): void {
    if (w.started) return;
    w.started = true;
    this.run(() => this.load(w));
  }

  release(w: Watched): void {
    // Later, so that a component that unsubscribes and subscribes again at
    // once (React's StrictMode) keeps the query it has.
    setTimeout(() => {
      if (w.listeners.size > 0 || this.watched.get(w.key) !== w) return;
      this.watched.delete(w.key);
      w.group.loaded.delete(w);
      if (w.engine !== null && !this.closed) this.engines.close(w.engine);
      w.engine = null;
      if (![...this.watched.values()].some((o) => o.group === w.group)) {
        this.groups.delete(JSON.stringify([w.group.space, w.group.collection]));
      } else if (w.group.loaded.size === 0) {
        // No loaded query follows the group's changes any more: its rows
        // would go stale.
        w.group.rows.clear();
      }
    }, 0);
  }

  private run(work: () => Promise<void>): void {
    if (this.closed) return;
    this.chain = this.chain.then(() => (this.closed ? undefined : work())).catch((e) => console.error("ferry: live query update failed", e));
  }

  private async load(w: Watched): Promise<void> {
    if (this.watched.get(w.key) !== w) return;
    const { space, collection, rows } = w.group;
    try {
      if (w.engine === null) w.engine = this.engines.open(w.query as core.QueryJson);
      const [records, complete] = await Promise.all([
        this.store.liveRecords(space, collection, w.query),
        this.store.complete(space),
      ]);
      this.complete.set(space, complete);
      const matching = this.engines.load(w.engine, records.map((r) => [r.id, r.fields]));
      for (const i of matching) {
        const r = records[i];
        const held = r && rows.get(r.id);
        if (r && !(held && sameFields(held.fields as Fields, r.fields))) {
          rows.set(r.id, frozenRow(space, collection, r.id, r.fields));
        }
      }
      w.group.loaded.add(w);
      this.update(w);
    } catch (e) {
      const error = e instanceof FerryError ? e : new FerryError(String(e), "storage");
      w.publish(Object.freeze({ rows: Object.freeze([]), status: "error", error }));
    }
  }

  private async flush(): Promise<void> {
    const changes = this.queue;
    this.queue = [];
    // Per group, each record's latest state: carried by its one change in
    // the tick, or read (several changes, or one that carries none).
    const byGroup = new Map<Group, Map<string, Fields | null | undefined>>();
    for (const c of changes) {
      const group = this.groups.get(JSON.stringify([c.space, c.collection]));
      if (!group || group.loaded.size === 0) continue;
      let states = byGroup.get(group);
      if (!states) byGroup.set(group, (states = new Map()));
      states.set(c.id, states.has(c.id) ? undefined : c.fields);
    }
    for (const [group, states] of byGroup) {
      const unread = [...states].filter(([, f]) => f === undefined).map(([id]) => id);
      if (unread.length > 0) {
        const read = await this.store.fieldsOf(group.space, group.collection, unread);
        unread.forEach((id, i) => states.set(id, read[i] ?? null));
      }
      const engines = Uint32Array.from([...group.loaded].flatMap((w) => (w.engine === null ? [] : [w.engine])));
      for (const [id, fields] of states) {
        const matches = this.engines.apply(engines, id, fields ?? null);
        const held = group.rows.get(id);
        if (!matches || !fields) group.rows.delete(id);
        else if (!held || !sameFields(held.fields as Fields, fields)) {
          group.rows.set(id, frozenRow(group.space, group.collection, id, fields));
        }
      }
      for (const w of group.loaded) this.update(w);
    }
    if (changes.some((c) => c.source === "remote")) await this.recheck();
  }

  /** Publishes what the engine says changed in `w`'s window, and its status. */
  private update(w: Watched): void {
    if (w.engine === null) return;
    const change = this.engines.take(w.engine);
    const status = this.complete.get(w.group.space) ? "complete" : "loading";
    const before = w.result;
    if (change === null && status === before.status) return;
    let rows = before.rows;
    if (change !== null) {
      const { space, collection } = w.group;
      const row = (id: string) => w.group.rows.get(id) ?? frozenRow(space, collection, id, {});
      if ("reset" in change) {
        rows = change.reset.map(row);
      } else {
        const next = rows.slice();
        for (const s of change.splices) {
          if (s[0] === "-") next.splice(s[1], 1);
          else if (s[0] === "+") next.splice(s[1], 0, row(s[2]));
          else next[s[1]] = row(s[2]);
        }
        rows = next;
      }
      const same = rows.length === before.rows.length && rows.every((r, i) => r === before.rows[i]);
      rows = same ? before.rows : Object.freeze(rows);
    }
    // The first result is always handed out: it says the rows are read.
    if (rows === before.rows && status === before.status && before !== LOADING) return;
    w.publish(Object.freeze({ rows, status }));
  }

  private async recheck(): Promise<void> {
    const spaces = new Set(
      [...this.watched.values()].map((w) => w.group.space).filter((s) => this.complete.get(s) === false),
    );
    for (const space of spaces) {
      if (!(await this.store.complete(space))) continue;
      this.complete.set(space, true);
      for (const w of this.watched.values()) if (w.group.space === space && w.group.loaded.has(w)) this.update(w);
    }
  }
}
