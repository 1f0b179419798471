// The app's schema in the browser client (docs/schema.md), in a real
// headless Chromium against a real `ferry serve`: the demo's own schema
// applied with `ferry schema apply`, fetched by the replica at sync, and a
// write that breaks it refused at the call, through the same ferry-core
// code (wasm) the server runs, with nothing stored or queued; a newer
// schema reaching an open page by the realtime signal.

import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { ROOT, addTodo, eventually, launch, openDemo, signIn, startServer, waitForStatus, waitForTitles } from "./helpers.mjs";

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

test("a write that breaks the app's schema is refused in the browser, naming the field", async () => {
  const out = server.ferry("schema", "apply", join(ROOT, "examples/todo/ferry.schema.toml"));
  assert.match(out, /Applied schema version 1/);

  const context = await browser.newContext();
  const page = await openDemo(context, server);
  await signIn(page, server, "typed@example.com");
  // The replica fetches the schema at its next sync (within a second of
  // the apply, as the server re-reads it at most once a second).
  await eventually(async () => {
    await page.evaluate(() => window.ferry.sync());
    assert.equal(await page.evaluate(async () => (await window.ferry.appSchema()).version), 1);
  }, "the schema in the replica");

  const refused = await page.evaluate(async () => {
    const f = window.ferry;
    const space = f.personalSpace();
    const tries = [
      ["t1", { title: 5, done: false }],
      ["t2", { title: "Milk", done: "yes" }],
      ["t3", { title: "Milk", colour: "red" }],
      ["t4", { done: true }],
    ];
    const out = [];
    for (const [id, fields] of tries) {
      try {
        await f.put(space, "todos", id, fields);
        out.push({ id, ok: true });
      } catch (e) {
        out.push({ id, code: e.code, field: e.details?.field, rule: e.details?.rule, message: e.message });
      }
    }
    const stored = await f.list(space, "todos");
    return { out, stored: stored.map((r) => r.id) };
  });
  assert.deepEqual(
    refused.out.map(({ id, code, field, rule }) => ({ id, code, field, rule })),
    [
      { id: "t1", code: "schema", field: "title", rule: "type" },
      { id: "t2", code: "schema", field: "done", rule: "type" },
      { id: "t3", code: "schema", field: "colour", rule: "undeclared_field" },
      { id: "t4", code: "schema", field: "title", rule: "required" },
    ],
  );
  assert.match(refused.out[1].message, /^todos\/t2: field done must be true or false/);
  assert.deepEqual(refused.stored, [], "a refused write was stored");
  await waitForStatus(page, "idle", 0);

  // The demo's own writes fit its schema, and sync as before.
  await addTodo(page, "Fits the schema");
  await waitForTitles(page, ["Fits the schema"]);
  await waitForStatus(page, "idle", 0);

  // A compatible change applied while the page is open reaches it by the
  // realtime signal alone: the page does not write or ask to sync.
  const demo = await readFile(join(ROOT, "examples/todo/ferry.schema.toml"), "utf8");
  await withSchema(server, `${demo}note    = { type = "string", max_length = 50 }\n`, null, /Applied schema version 2/);
  await eventually(async () => {
    assert.equal(await page.evaluate(async () => (await window.ferry.appSchema()).version), 2);
  }, "the new schema reaching the page by realtime");
  const noted = await page.evaluate(async () => {
    const f = window.ferry;
    await f.put(f.personalSpace(), "todos", "n1", { title: "With a note", note: "short" });
    try {
      await f.put(f.personalSpace(), "todos", "n2", { title: "Too long", note: "x".repeat(51) });
      return "taken";
    } catch (e) {
      return e.details?.rule;
    }
  });
  assert.equal(noted, "max_length");
  await waitForStatus(page, "idle", 0);

  // Offline, three writes that version 2 takes; a breaking version 3,
  // forced meanwhile, refuses the middle one. Back online, the server
  // names that change: it alone goes to the rejected list and its record
  // is undone, and the others sync.
  await context.setOffline(true);
  await page.evaluate(async () => {
    const f = window.ferry;
    const space = f.personalSpace();
    await Promise.all([
      f.put(space, "todos", "o1", { title: "Before" }),
      f.put(space, "todos", "o2", { title: "Long note", note: "x".repeat(40) }),
      f.put(space, "todos", "o3", { title: "After" }),
    ]);
  });
  await withSchema(server, `${demo}note    = { type = "string", max_length = 10 }\n`, "--force", /Applied schema version 3/);
  await context.setOffline(false);
  await eventually(async () => {
    await page.evaluate(() => window.ferry.sync()).catch(() => undefined);
    const rejected = await page.evaluate(() => window.ferry.rejected());
    assert.deepEqual(
      rejected.map((r) => [r.change.id, r.code]),
      [["o2", "invalid_change"]],
    );
  }, "the refused change in the rejected list");
  await waitForStatus(page, "idle", 0);
  const ids = await page.evaluate(async () => (await window.ferry.list(window.ferry.personalSpace(), "todos")).map((r) => r.id));
  assert.deepEqual(ids.filter((id) => id.startsWith("o")).sort(), ["o1", "o3"]);
  await context.close();
});

/** Applies `text` as the schema (with `flag`, if any); checks the answer. */
async function withSchema(server, text, flag, answer) {
  const dir = await mkdtemp(join(tmpdir(), "ferry-schema-"));
  try {
    const file = join(dir, "ferry.schema.toml");
    await writeFile(file, text);
    assert.match(server.ferry("schema", "apply", file, ...(flag ? [flag] : [])), answer);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
