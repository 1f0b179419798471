// Live queries in the browser (docs/live-queries.md), each figure beside a
// baseline from the same run:
//
// - update: 10,000 records, 20 live queries open (filters and orders on
//   indexed fields); one local write, then the time until every query it
//   touches has its new result, against re-running the 20 queries from
//   scratch (`list`, through the same indexes).
// - indexed read: 1,000 matching records of 100,000, by `=` on an indexed
//   field, against the same query on a field without an index (a scan).

import { LiveQueries } from "../../clients/js/src/live.js";
import { Store } from "../../clients/js/src/store.js";
import type { Query, ServerRecord } from "../../clients/js/src/types.js";

const SPACE = "user:bench";
const SCHEMA = {
  collections: {
    todos: {
      fields: {
        title: { type: "string" },
        list: { type: "string", index: true },
        copy: { type: "string" },
        priority: { type: "integer", index: true },
        done: { type: "boolean" },
      },
    },
  },
};

function hlc(ms: number): string {
  return `${String(ms).padStart(15, "0")}:00000:server-1`;
}

/** `n` records over `lists` lists (`copy`: the same value, not indexed). */
function records(n: number, lists: number): ServerRecord[] {
  const h = hlc(1_763_798_400_000);
  return Array.from({ length: n }, (_, i) => ({
    collection: "todos",
    id: `t-${String(i).padStart(8, "0")}`,
    seq: i + 1,
    fields: {
      title: { value: `Item ${i}`, hlc: h },
      list: { value: `list-${i % lists}`, hlc: h },
      copy: { value: `list-${i % lists}`, hlc: h },
      priority: { value: i % 10, hlc: h },
      done: { value: i % 3 === 0, hlc: h },
    },
    deleted: null,
  }));
}

async function filled(n: number, lists: number): Promise<Store> {
  const store = await Store.open(`bench-live-${n}-${Math.random()}`);
  await store.startSession({
    user: { id: "bench", email: null },
    server: location.origin,
    accessToken: "unused",
    refreshToken: null,
    expiresAt: null,
  });
  await store.holdAppSchema({ version: 1, schema: SCHEMA });
  const all = records(n, lists);
  for (let i = 0; i < all.length; i += 5000) {
    const page = all.slice(i, i + 5000);
    await store.storeAnswer(SPACE, null, {
      applied: 0,
      conflicts: [],
      changes: page,
      cursor: page[page.length - 1].seq,
      has_more: i + 5000 < all.length,
      hlc: hlc(1_763_798_400_000),
    });
  }
  return store;
}

/** Twenty queries over the indexed fields: by list, by priority, ordered, some windowed. */
function queries(): Query[] {
  return Array.from({ length: 20 }, (_, k): Query => {
    if (k % 4 === 0) return { where: [["priority", "=", k % 10]], orderBy: [["title", "asc"]], limit: 50 };
    if (k % 4 === 1) return { where: [["list", "=", `list-${k}`]], orderBy: [["priority", "desc"], ["title", "asc"]] };
    if (k % 4 === 2) return { where: [["priority", ">=", 8], ["done", "=", false]], orderBy: [["priority", "asc"]], limit: 20, offset: k };
    return { where: [["list", "in", [`list-${k}`, `list-${k + 1}`]]], orderBy: [["title", "desc"]] };
  });
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

export interface LiveOptions {
  records: number;
  writes: number;
  big: number;
}

export async function runLiveBench(o: LiveOptions): Promise<Record<string, number>> {
  const store = await filled(o.records, 20);
  const live = new LiveQueries(store);
  const qs = queries();
  const loaded = qs.map(
    (q) =>
      new Promise<void>((resolve) => {
        const stop = live.query(SPACE, "todos", q).subscribe(() => resolve());
        void stop;
      }),
  );
  await Promise.all(loaded);
  const update: number[] = [];
  const rerun: number[] = [];
  for (let i = 0; i < o.writes; i++) {
    const id = `t-${String((i * 7919) % o.records).padStart(8, "0")}`;
    const fields = i % 2 ? { priority: (i * 3) % 10 } : { list: `list-${i % 20}`, copy: `list-${i % 20}` };
    const changed = await store.write(SPACE, "todos", id, "patch", fields);
    let start = performance.now();
    live.changed([changed]);
    await live.settled();
    update.push(performance.now() - start);
    start = performance.now();
    for (const q of qs) await store.list(SPACE, "todos", q);
    rerun.push(performance.now() - start);
  }
  store.close();

  const big = await filled(o.big, Math.max(1, Math.round(o.big / 1000)));
  const indexed: number[] = [];
  const scanned: number[] = [];
  let rows = 0;
  // The reads through the index first: a scan leaves 100,000 records for
  // the collector, which would then run inside the next read.
  for (let i = 0; i < 5; i++) {
    const start = performance.now();
    rows = (await big.list(SPACE, "todos", { where: [["list", "=", `list-${i}`]] })).length;
    indexed.push(performance.now() - start);
  }
  for (let i = 0; i < 5; i++) {
    const start = performance.now();
    await big.list(SPACE, "todos", { where: [["copy", "=", `list-${i}`]] });
    scanned.push(performance.now() - start);
  }
  // The floor: the same 1,000 stored records read back with one getAll
  // from a plain object store that holds only them.
  const stored = await big.db.getAllFromIndex(
    "records",
    "ix",
    IDBKeyRange.only([SPACE, "todos", "list", 3, "list-0"]),
  );
  big.close();
  const raw: number[] = [];
  const db: IDBDatabase = await new Promise((resolve, reject) => {
    const req = indexedDB.open(`bench-live-raw-${Math.random()}`, 1);
    req.onupgradeneeded = () => req.result.createObjectStore("records", { keyPath: ["space", "collection", "id"] });
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
  await new Promise((resolve, reject) => {
    const tx = db.transaction("records", "readwrite");
    for (const r of stored) tx.objectStore("records").put(r);
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
  });
  for (let i = 0; i < 5; i++) {
    const start = performance.now();
    await new Promise((resolve, reject) => {
      const req = db.transaction("records").objectStore("records").getAll();
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    raw.push(performance.now() - start);
  }
  db.close();
  return {
    raw_p50: percentile(raw, 50),
    raw_rows: stored.length,
    update_p50: percentile(update, 50),
    update_p99: percentile(update, 99),
    rerun_p50: percentile(rerun, 50),
    rerun_p99: percentile(rerun, 99),
    indexed_p50: percentile(indexed, 50),
    scanned_p50: percentile(scanned, 50),
    indexed_rows: rows,
  };
}
