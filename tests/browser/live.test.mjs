// Live queries in the browser client (docs/live-queries.md), in a real
// headless Chromium against a real `ferry serve`: a watched query's result
// follows writes of this tab, of another tab and of another device; rows
// that did not change keep their object; a pulled page gives one new
// result; the status says loading until the space's first sync is done;
// a query that is not one is an error result.

import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { eventually, launch, openDemo, signIn, startServer, twoDevices } from "./helpers.mjs";

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Watches the open todos by title, 3 at most, in `page`; results gather in `window.results`. */
async function watchOpen(page) {
  await page.evaluate(() => {
    const f = window.ferry;
    window.results = [];
    window.live = f.query(f.personalSpace(), "todos", {
      where: [["done", "=", false]],
      orderBy: [["title", "asc"]],
      limit: 3,
    });
    window.stopLive = window.live.subscribe((r) => window.results.push(r));
  });
}

/** The titles the watched query shows now, and its status. */
function shown(page) {
  return page.evaluate(() => {
    const r = window.live.getSnapshot();
    return { titles: r.rows.map((row) => row.fields.title), status: r.status };
  });
}

async function waitShown(page, titles, what) {
  await eventually(async () => assert.deepEqual(await shown(page), { titles, status: "complete" }), what);
}

test("a live query follows this tab's writes, and rows that did not change keep their object", async () => {
  const context = await browser.newContext();
  const page = await openDemo(context, server);
  await page.evaluate(async () => {
    const f = window.ferry;
    const s = f.personalSpace();
    for (const [id, title, done] of [["a", "Apples", false], ["b", "Bread", false], ["c", "Cheese", true], ["d", "Dates", false], ["e", "Eggs", false]]) {
      await f.put(s, "todos", id, { title, done, created: 1 });
    }
  });
  await watchOpen(page);
  await waitShown(page, ["Apples", "Bread", "Dates"], "the first result");

  const steps = await page.evaluate(async () => {
    const f = window.ferry;
    const s = f.personalSpace();
    const tick = () => new Promise((r) => setTimeout(r, 50));
    const out = {};
    const first = window.live.getSnapshot();
    // A record outside the query changes: no new result.
    let n = window.results.length;
    await f.patch(s, "todos", "c", { title: "Camembert" });
    await tick();
    out.unrelated = window.results.length - n;
    out.sameSnapshot = window.live.getSnapshot() === first;
    // A row changes in place: the others are the same objects.
    n = window.results.length;
    await f.patch(s, "todos", "b", { title: "Brioche" });
    await tick();
    const second = window.live.getSnapshot();
    out.inPlace = window.results.length - n;
    out.keptA = second.rows[0] === first.rows[0];
    out.keptD = second.rows[2] === first.rows[2];
    out.newB = second.rows[1] !== first.rows[1];
    out.second = second.rows.map((r) => r.fields.title);
    // A record enters at the front and pushes the last one out; done
    // leaves, and the next one comes in.
    await f.put(s, "todos", "z", { title: "Almonds", done: false, created: 2 });
    await tick();
    out.entered = window.live.getSnapshot().rows.map((r) => r.fields.title);
    await f.patch(s, "todos", "a", { done: true });
    await f.delete(s, "todos", "z");
    await tick();
    out.left = window.live.getSnapshot().rows.map((r) => r.fields.title);
    out.frozen = Object.isFrozen(window.live.getSnapshot().rows) && Object.isFrozen(window.live.getSnapshot().rows[0]);
    // Watching the same query again shares it.
    out.shared =
      f.query(s, "todos", { where: [["done", "=", false]], orderBy: [["title", "asc"]], limit: 3 }) === window.live;
    // Released (no subscriber for a while), written to, then watched
    // again through the same object: it is read again and follows.
    window.stopLive();
    await tick();
    await f.patch(s, "todos", "d", { title: "Damsons" });
    out.again = await new Promise((resolve) => {
      const stop = window.live.subscribe((r) => {
        stop();
        resolve(r.rows.map((x) => x.fields.title));
      });
    });
    return out;
  });
  assert.deepEqual(steps, {
    unrelated: 0,
    sameSnapshot: true,
    inPlace: 1,
    keptA: true,
    keptD: true,
    newB: true,
    second: ["Apples", "Brioche", "Dates"],
    entered: ["Almonds", "Apples", "Brioche"],
    left: ["Brioche", "Dates", "Eggs"],
    frozen: true,
    shared: true,
    again: ["Brioche", "Damsons", "Eggs"],
  });
  // The live result is what `list` gives for the same query.
  const listed = await page.evaluate(async () => {
    const f = window.ferry;
    const rows = await f.list(f.personalSpace(), "todos", { where: [["done", "=", false]], orderBy: [["title", "asc"]], limit: 3 });
    return rows.map((r) => r.fields.title);
  });
  assert.deepEqual(listed, ["Brioche", "Damsons", "Eggs"]);
  await context.close();
});

test("a live query follows another tab's writes", async () => {
  const context = await browser.newContext();
  const one = await openDemo(context, server);
  const two = await openDemo(context, server);
  await watchOpen(one);
  await waitShown(one, [], "the empty result");
  await two.evaluate(async () => {
    const f = window.ferry;
    await f.put(f.personalSpace(), "todos", "t1", { title: "From tab two", done: false, created: 1 });
  });
  await waitShown(one, ["From tab two"], "the other tab's write");
  await two.evaluate(async () => {
    const f = window.ferry;
    await f.patch(f.personalSpace(), "todos", "t1", { done: true });
  });
  await waitShown(one, [], "the other tab's todo done");
  await context.close();
});

test("a live query follows another device, and a pulled page is one new result", async () => {
  const { a, b, pageA, pageB } = await twoDevices(browser, server, "live@example.com");
  await watchOpen(pageB);
  await waitShown(pageB, [], "the first result on B");
  // Fifty writes made offline go in one push, and reach B in one pull.
  await a.setOffline(true);
  await pageA.evaluate(async () => {
    const f = window.ferry;
    for (let i = 0; i < 50; i++) {
      await f.put(f.personalSpace(), "todos", `bulk${String(i).padStart(2, "0")}`, { title: `Bulk ${String(i).padStart(2, "0")}`, done: i % 2 === 1, created: i });
    }
  });
  const before = await pageB.evaluate(() => window.results.length);
  await a.setOffline(false);
  await pageA.evaluate(() => window.ferry.sync());
  await waitShown(pageB, ["Bulk 00", "Bulk 02", "Bulk 04"], "A's offline writes on B");
  const results = await pageB.evaluate((n) => window.results.slice(n).map((r) => r.rows.length), before);
  assert.deepEqual(results, [3], "the pulled page gave one new result");
  // B's query updates as A edits.
  await pageA.evaluate(async () => {
    const f = window.ferry;
    await f.patch(f.personalSpace(), "todos", "bulk02", { done: true });
  });
  await waitShown(pageB, ["Bulk 00", "Bulk 04", "Bulk 06"], "A's edit on B");
  await a.close();
  await b.close();
});

test("a space not synced yet is loading, and a query that is not one is an error", async () => {
  const context = await browser.newContext();
  const page = await openDemo(context, server);
  const out = await page.evaluate(async () => {
    const f = window.ferry;
    // A space this replica follows but has never pulled.
    await f.track("shared:never-synced");
    const first = await new Promise((resolve) => {
      const stop = f.watch("shared:never-synced", "todos", {}, (r) => {
        stop();
        resolve(r);
      });
    });
    const bad = f.query(f.personalSpace(), "todos", { where: [["done", "~", true]] });
    const errored = await new Promise((resolve) => {
      const stop = bad.subscribe((r) => {
        stop();
        resolve(r);
      });
    });
    return {
      status: first.status,
      rows: first.rows.length,
      bad: errored.status,
      code: errored.error?.code,
      message: errored.error?.message,
    };
  });
  assert.equal(out.status, "loading");
  assert.equal(out.rows, 0);
  assert.equal(out.bad, "error");
  assert.equal(out.code, "invalid");
  assert.match(out.message, /unknown operator/);
  await context.close();
});

test("fields the schema indexes are read through an IndexedDB index, built for records stored before", async () => {
  const context = await browser.newContext();
  const page = await openDemo(context, server);
  await signIn(page, server, "indexed@example.com");
  // Records stored before the schema that indexes them reaches the replica.
  await page.evaluate(async () => {
    const f = window.ferry;
    for (let i = 0; i < 40; i++) {
      await f.put(f.personalSpace(), "cards", `c${String(i).padStart(2, "0")}`, { pos: i % 10, tag: i % 2 ? "odd" : "even", copy: i % 10 });
    }
    await f.put(f.personalSpace(), "cards", "nopos", { tag: "none" });
  });
  const dir = await mkdtemp(join(tmpdir(), "ferry-index-"));
  const file = join(dir, "schema.toml");
  await writeFile(
    file,
    `[collections.todos.fields]\ntitle = { type = "string" }\n\n[collections.cards.fields]\npos = { type = "integer", index = true }\ntag = { type = "string", index = true }\ncopy = { type = "integer" }\n`,
  );
  server.ferry("schema", "apply", file);
  await rm(dir, { recursive: true, force: true });
  await eventually(async () => {
    await page.evaluate(() => window.ferry.sync());
    assert.ok((await page.evaluate(async () => (await window.ferry.appSchema()).version)) >= 1);
  }, "the schema in the replica");

  const out = await page.evaluate(async () => {
    const f = window.ferry;
    const s = f.personalSpace();
    const ids = (rows) => rows.map((r) => r.id);
    const q = (field) => ({ where: [[field, ">=", 7], ["tag", "!=", "x"]], orderBy: [[field, "desc"]] });
    const indexed = ids(await f.list(s, "cards", q("pos")));
    const scanned = ids(await f.list(s, "cards", q("copy")));
    const inList = ids(await f.list(s, "cards", { where: [["tag", "in", ["none", "nope"]]] }));
    const nulls = ids(await f.list(s, "cards", { where: [["pos", "<", 0]] }));
    // The index's entries, read from IndexedDB itself.
    const db = await new Promise((resolve, reject) => {
      const req = indexedDB.open("ferry-todo");
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
    const count = (range) =>
      new Promise((resolve, reject) => {
        const req = db.transaction("records").objectStore("records").index("ix").count(range);
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
    const entries = await count(IDBKeyRange.bound([s, "cards"], [s, "cards", []]));
    // A record whose entry is taken away is no longer found through the
    // index, while a scan still finds it: the query reads the index.
    await new Promise((resolve, reject) => {
      const tx = db.transaction("records", "readwrite");
      const store = tx.objectStore("records");
      const get = store.get([s, "cards", "c09"]);
      get.onsuccess = () => {
        const { ix: _, ...rest } = get.result;
        store.put(rest);
      };
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
    });
    db.close();
    const without = ids(await f.list(s, "cards", q("pos")));
    // A live query on the index follows writes.
    const live = await new Promise((resolve) => {
      const seen = [];
      const stop = f.watch(s, "cards", { where: [["pos", "=", 3]] }, (r) => {
        seen.push(r.rows.length);
        if (seen.length === 1) void f.patch(s, "cards", "c00", { pos: 3 });
        else {
          stop();
          resolve(seen);
        }
      });
    });
    return { indexed, scanned, inList, nulls, entries, without, live };
  });
  const want = ["c09", "c19", "c29", "c39", "c08", "c18", "c28", "c38", "c07", "c17", "c27", "c37"];
  assert.deepEqual(out.indexed, want);
  assert.deepEqual(out.scanned, want);
  assert.deepEqual(out.inList, ["nopos"]);
  assert.deepEqual(out.nulls, ["nopos"], "a record without the field is null, below every number");
  assert.equal(out.entries, 41 * 2, "two entries per record, built when the schema arrived");
  assert.deepEqual(out.without, want.filter((id) => id !== "c09"));
  assert.deepEqual(out.live, [4, 5]);
  await context.close();
});
