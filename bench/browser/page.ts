// The browser client's figures, each beside a baseline from the same run:
//
// - apply: storing pulled pages (`Store.storeAnswer`, the path a sync
//   takes) into a fresh replica and again into one that holds the records
//   (every record merged by the wasm core), against the same objects put
//   straight into an IndexedDB object store in one transaction.
// - merge: the wasm core's `mergeRecord` (JSON in, JSON out, as the client
//   calls it); run.mjs sets it against the native core doing the same.
//
// run.mjs calls `window.runBench(options)` and prints what it returns.

import { mergeRecord as wasmMerge } from "../../clients/js/wasm/ferry_wasm.js";
import { loadCore, mergeRecord } from "../../clients/js/src/core.js";
import { Store } from "../../clients/js/src/store.js";
import type { ServerRecord, SyncAnswer } from "../../clients/js/src/types.js";
import { runLiveBench } from "./live.js";

const PAGE = 5000;

function hlc(ms: number, node: string): string {
  return `${String(ms).padStart(15, "0")}:00000:${node}`;
}

/** Records of 4 small fields (~100 bytes of values), as a pull sends them. */
function records(n: number, ms: number): ServerRecord[] {
  const h = hlc(ms, "server-1");
  return Array.from({ length: n }, (_, i) => ({
    collection: "todos",
    id: `t-${String(i).padStart(8, "0")}`,
    seq: i + 1,
    fields: {
      title: { value: `Buy item number ${i} at the shop`, hlc: h },
      done: { value: i % 3 === 0, hlc: h },
      created: { value: 1_763_798_400_000 + i, hlc: h },
      note: { value: "remember the list", hlc: h },
    },
    deleted: null,
  }));
}

async function applyPages(store: Store, all: ServerRecord[]): Promise<number> {
  const start = performance.now();
  for (let i = 0; i < all.length; i += PAGE) {
    const page = all.slice(i, i + PAGE);
    const answer: SyncAnswer = {
      applied: 0,
      conflicts: [],
      changes: page,
      cursor: page[page.length - 1].seq,
      has_more: i + PAGE < all.length,
      hlc: hlc(1_763_798_400_000, "server-1"),
    };
    await store.storeAnswer("user:bench", null, answer);
  }
  return performance.now() - start;
}

async function rawPuts(all: ServerRecord[], name: string): Promise<number> {
  const db: IDBDatabase = await new Promise((resolve, reject) => {
    const req = indexedDB.open(name, 1);
    req.onupgradeneeded = () => req.result.createObjectStore("records", { keyPath: ["space", "collection", "id"] });
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
  const start = performance.now();
  const tx = db.transaction("records", "readwrite");
  const store = tx.objectStore("records");
  for (const r of all) store.put({ space: "user:bench", ...r, seen: 1 });
  await new Promise((resolve, reject) => {
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
  });
  const ms = performance.now() - start;
  db.close();
  return ms;
}

interface Options {
  records: number;
  merges: number;
  runs: number;
  /** The two states to merge, as JSON: the same the native run merges. */
  ours: string;
  theirs: string;
}

/** `n` merges as the client makes them (objects in and out). */
function clientMerges(n: number, ours: string, theirs: string): number {
  const [o, t] = [JSON.parse(ours), JSON.parse(theirs)];
  const start = performance.now();
  for (let i = 0; i < n; i++) mergeRecord(o, t);
  return performance.now() - start;
}

/** `n` merges of the wasm core alone (JSON text in and out). */
function wasmMerges(n: number, ours: string, theirs: string): number {
  const start = performance.now();
  let bytes = 0;
  for (let i = 0; i < n; i++) bytes += wasmMerge(ours, theirs).length;
  if (bytes === 0) throw new Error("nothing merged");
  return performance.now() - start;
}

async function runBench(o: Options): Promise<Record<string, number[]>> {
  await loadCore(new URL("ferry_wasm_bg.wasm", import.meta.url));
  const result: Record<string, number[]> = { apply_new: [], apply_merge: [], raw_put: [], wasm_merge: [], client_merge: [] };
  for (let run = 0; run < o.runs; run++) {
    const all = records(o.records, 1_763_798_400_000 + run);
    const store = await Store.open(`bench-${run}-${Math.random()}`);
    // Signed in as the user of `user:bench`, as a syncing replica is.
    await store.startSession({
      user: { id: "bench", email: null },
      server: location.origin,
      accessToken: "unused",
      refreshToken: null,
      expiresAt: null,
    });
    result.apply_new.push(o.records / ((await applyPages(store, all)) / 1000));
    result.apply_merge.push(o.records / ((await applyPages(store, records(o.records, 1_763_798_500_000 + run))) / 1000));
    store.close();
    result.raw_put.push(o.records / ((await rawPuts(all, `bench-raw-${run}-${Math.random()}`)) / 1000));
    result.wasm_merge.push(o.merges / (wasmMerges(o.merges, o.ours, o.theirs) / 1000));
    result.client_merge.push(o.merges / (clientMerges(o.merges, o.ours, o.theirs) / 1000));
  }
  return result;
}

(globalThis as { runBench?: typeof runBench }).runBench = runBench;
(globalThis as { runLiveBench?: typeof runLiveBench }).runLiveBench = async (o) => {
  await loadCore(new URL("ferry_wasm_bg.wasm", import.meta.url));
  return runLiveBench(o);
};
document.getElementById("out")!.textContent = "ready";
