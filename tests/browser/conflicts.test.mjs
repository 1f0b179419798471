// Edits that crossed, in the todo demo in a real headless Chromium against
// a real `ferry serve`: whichever browser comes back online first, the one
// whose edit lost sees both versions and the other sees nothing; a todo
// edited on one browser and deleted on the other can be restored from what
// was written.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  addTodo,
  eventually,
  launch,
  screenshot,
  startServer,
  twoDevices,
  waitForStatus,
  waitForTitles,
} from "./helpers.mjs";

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

async function rename(page, title) {
  await page.dblclick("[data-testid=todo] .title");
  await page.fill("[data-testid=todo] input.edit", title);
  await page.press("[data-testid=todo] input.edit", "Enter");
}

/** Brings `first` online, waits for it to settle, then `second`. */
async function backOnline([first, firstPage], [second, secondPage]) {
  await first.setOffline(false);
  await waitForStatus(firstPage, "idle", 0);
  await second.setOffline(false);
  await waitForStatus(secondPage, "idle", 0);
}

for (const order of ["the newer edit first", "the older edit first"]) {
  test(`edits that cross show both versions to the one that lost: ${order}`, async () => {
    const email = `cross-${order.split(" ")[1]}@example.com`;
    const { a, b, pageA, pageB } = await twoDevices(browser, server, email);
    await addTodo(pageA, "Shared");
    await waitForTitles(pageB, ["Shared"]);

    await a.setOffline(true);
    await b.setOffline(true);
    await waitForStatus(pageA, "offline");
    await waitForStatus(pageB, "offline");
    await rename(pageA, "Renamed in A");
    await new Promise((r) => setTimeout(r, 20));
    // B's edit is later: it wins in either order.
    await rename(pageB, "Renamed in B");
    if (order === "the newer edit first") {
      await backOnline([b, pageB], [a, pageA]);
    } else {
      await backOnline([a, pageA], [b, pageB]);
    }
    await waitForTitles(pageA, ["Renamed in B"]);
    await waitForTitles(pageB, ["Renamed in B"]);
    await pageA.waitForSelector("[data-testid=conflict]");
    const shown = await pageA.textContent("#conflict-list");
    assert.match(shown, /Renamed in A/);
    assert.match(shown, /Renamed in B/);
    assert.equal((await pageA.$$("[data-testid=conflict]")).length, 1);
    assert.equal(await pageB.$("[data-testid=conflict]"), null, "the winner is told nothing");
    await screenshot(pageA, `conflict-${order.split(" ")[1]}-first`);

    await pageA.click("[data-testid=conflict] button[data-keep=mine]");
    await waitForTitles(pageB, ["Renamed in A"], "the kept version in the other browser");
    assert.equal(await pageA.$("[data-testid=conflict]"), null);
    await waitForStatus(pageB, "idle", 0);
    assert.equal(await pageB.$("[data-testid=conflict]"), null);
    await a.close();
    await b.close();
  });
}

for (const order of ["the delete first", "the edit first"]) {
  test(`a todo edited while deleted elsewhere can be restored: ${order}`, async () => {
    const email = `restore-${order.split(" ")[1]}@example.com`;
    const { a, b, pageA, pageB } = await twoDevices(browser, server, email);
    await addTodo(pageA, "Shared");
    await waitForTitles(pageB, ["Shared"]);

    await a.setOffline(true);
    await b.setOffline(true);
    await waitForStatus(pageA, "offline");
    await waitForStatus(pageB, "offline");
    await pageB.click("[data-testid=todo]:has-text('Shared') .remove");
    await rename(pageA, "LOSTWRITE-123");
    if (order === "the delete first") {
      await backOnline([b, pageB], [a, pageA]);
    } else {
      await backOnline([a, pageA], [b, pageB]);
    }
    await waitForTitles(pageA, []);
    await waitForTitles(pageB, []);
    await pageA.waitForSelector("[data-testid=conflict]");
    assert.match(await pageA.textContent("#conflict-list"), /deleted on another device[\s\S]*LOSTWRITE-123/);
    assert.equal(await pageB.$("[data-testid=conflict]"), null, "the deleting browser is told nothing");
    await screenshot(pageA, `deleted-${order.split(" ")[1]}-first`);

    await pageA.click("[data-testid=conflict] button[data-action=restore]");
    await waitForTitles(pageA, ["LOSTWRITE-123"]);
    await waitForTitles(pageB, ["LOSTWRITE-123"], "the restored todo in the other browser");
    await eventually(
      async () => assert.equal(await pageA.$("[data-testid=conflict]"), null),
      "the conflict to be settled",
    );
    await a.close();
    await b.close();
  });
}

test("a browser replica of before v1.2 opens with its inbox and its client id", async () => {
  const context = await browser.newContext();
  // The replica as the client before protocol v1.2 left it: database
  // version 1, no index on conflicts, one conflict of that time.
  await context.addInitScript(() => {
    if (sessionStorage.getItem("seeded")) return;
    sessionStorage.setItem("seeded", "1");
    const req = indexedDB.open("ferry-todo", 1);
    req.onupgradeneeded = () => {
      const db = req.result;
      db.createObjectStore("records", { keyPath: ["space", "collection", "id"] });
      const outbox = db.createObjectStore("outbox", { keyPath: "n", autoIncrement: true });
      outbox.createIndex("space", "space");
      outbox.createIndex("batch", "batch");
      outbox.createIndex("record", ["space", "collection", "id"]);
      db.createObjectStore("spaces", { keyPath: "space" });
      db.createObjectStore("meta").put("web-before12", "client_id");
      db.createObjectStore("conflicts", { keyPath: "n", autoIncrement: true }).add({
        space: "local:anonymous",
        conflict: { collection: "todos", id: "t-old", field: null, kind: "record_deleted", yours: null, winner: null },
        at: 0,
      });
      db.createObjectStore("rejected", { keyPath: "n", autoIncrement: true });
    };
    req.onsuccess = () => req.result.close();
  });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  await page.goto(server.url);
  await page.waitForSelector("body[data-ready=true]");
  await page.waitForSelector("[data-testid=conflict]");
  const state = await page.evaluate(async () => ({
    clientId: window.ferry.clientId,
    conflicts: (await window.ferry.conflicts()).map((c) => c.conflict.id),
  }));
  assert.deepEqual(state, { clientId: "web-before12", conflicts: ["t-old"] });
  // An entry of before, with nothing to restore, is let go.
  await page.click("[data-testid=conflict] button[data-action=dismiss]");
  await eventually(async () => assert.equal(await page.$("[data-testid=conflict]"), null), "the entry to go");
  await context.close();
});

test("a browser replica of version 4 opens with its records packed, readable, and still written to", async () => {
  const context = await browser.newContext();
  // The replica as the client of version 4 left it: each field kept as
  // {value, hlc}, two fields of one record written at another HLC.
  await context.addInitScript(() => {
    if (sessionStorage.getItem("seeded")) return;
    sessionStorage.setItem("seeded", "1");
    const req = indexedDB.open("ferry-todo", 4);
    req.onupgradeneeded = () => {
      const db = req.result;
      db.createObjectStore("records", { keyPath: ["space", "collection", "id"] }).createIndex("ix", "ix", {
        multiEntry: true,
      });
      const outbox = db.createObjectStore("outbox", { keyPath: "n", autoIncrement: true });
      outbox.createIndex("space", "space");
      outbox.createIndex("batch", "batch");
      outbox.createIndex("record", ["space", "collection", "id"]);
      db.createObjectStore("spaces", { keyPath: "space" });
      db.createObjectStore("meta").put("web-before5", "client_id");
      db.createObjectStore("conflicts", { keyPath: "n", autoIncrement: true }).createIndex("record", [
        "space",
        "conflict.collection",
        "conflict.id",
      ]);
      db.createObjectStore("rejected", { keyPath: "n", autoIncrement: true });
      db.createObjectStore("files", { keyPath: ["space", "sha256"] });
      db.createObjectStore("fileBlobs");
      const h = (ms) => `${String(ms).padStart(15, "0")}:00000:web-before5`;
      const records = req.transaction.objectStore("records");
      records.put({
        space: "local:anonymous",
        collection: "todos",
        id: "t-old",
        fields: {
          title: { value: "Kept from version 4", hlc: h(1_763_798_400_001) },
          done: { value: false, hlc: h(1_763_798_400_001) },
          created: { value: 1, hlc: h(1_763_798_400_002) },
          // A field named like a property every object inherits.
          constructor: { value: "c", hlc: h(1_763_798_400_001) },
        },
        deleted: null,
        seen: 1,
        remote: 0,
      });
    };
    req.onsuccess = () => req.result.close();
  });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  await page.goto(server.url);
  await page.waitForSelector("body[data-ready=true]");
  await waitForTitles(page, ["Kept from version 4"]);
  const raw = () =>
    page.evaluate(
      () =>
        new Promise((resolve, reject) => {
          const req = indexedDB.open("ferry-todo");
          req.onsuccess = () => {
            const get = req.result.transaction("records").objectStore("records").get(["local:anonymous", "todos", "t-old"]);
            get.onsuccess = () => {
              req.result.close();
              resolve(get.result);
            };
            get.onerror = () => reject(get.error);
          };
          req.onerror = () => reject(req.error);
        }),
    );
  const h = (ms) => `${String(ms).padStart(15, "0")}:00000:web-before5`;
  assert.deepEqual(await raw(), {
    space: "local:anonymous",
    collection: "todos",
    id: "t-old",
    deleted: null,
    seen: 1,
    remote: 0,
    v: { title: "Kept from version 4", done: false, created: 1, constructor: "c" },
    h: h(1_763_798_400_001),
    o: { created: h(1_763_798_400_002) },
  });
  // Written to after the upgrade: the merge sees every field's own HLC.
  await page.evaluate(() => window.ferry.patch("local:anonymous", "todos", "t-old", { done: true }));
  const after = await raw();
  assert.deepEqual(after.v, { title: "Kept from version 4", done: true, created: 1, constructor: "c" });
  const hlc = (name) => after.o?.[name] ?? after.h;
  assert.equal(hlc("title"), h(1_763_798_400_001));
  assert.equal(hlc("created"), h(1_763_798_400_002));
  assert.ok(hlc("done") > h(1_763_798_400_002), `the patch's HLC is newer: ${hlc("done")}`);
  assert.equal(Object.keys(after.o).length, 2, "one HLC kept once, the two others apart");
  // Read back with other fields apart, `constructor` keeps its own HLC.
  await page.evaluate(() => window.ferry.patch("local:anonymous", "todos", "t-old", { title: "Renamed" }));
  const again = await raw();
  const hlcAgain = (name) => (again.o && Object.hasOwn(again.o, name) ? again.o[name] : again.h);
  assert.equal(hlcAgain("constructor"), h(1_763_798_400_001));
  assert.equal(again.v.title, "Renamed");
  await context.close();
});
