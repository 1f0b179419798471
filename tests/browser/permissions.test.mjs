// The schema's permissions in the browser client (docs/server-rules.md),
// in a real headless Chromium against a real `ferry serve`: an editor's
// write to what only owners may write, to another's card, or to a
// server-only field is refused at the call by the same ferry-core code
// (wasm) the server runs, and never queued; a card the editor makes is
// theirs; the author comes from the server, never from the page.

import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { eventually, launch, openDemo, signIn, startServer, waitForStatus } from "./helpers.mjs";

const SCHEMA = `
[collections.cards]
fields.title = { type = "string" }
fields.created_by = { type = "string", server_only = true }
permissions = { update = ["owner", "author"], delete = ["owner", "author"] }

[collections.settings]
permissions = { create = ["owner"], update = ["owner"], delete = ["owner"] }
`;

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

async function api(token, method, path, body) {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${await res.clone().text()}`);
  return res.status === 204 ? null : res.json();
}

test("forbidden writes are refused at the call in the browser, and allowed ones sync", async () => {
  const dir = await mkdtemp(join(tmpdir(), "ferry-permissions-"));
  try {
    await writeFile(join(dir, "ferry.schema.toml"), SCHEMA);
    assert.match(server.ferry("schema", "apply", join(dir, "ferry.schema.toml")), /Applied schema version 1/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  // alice owns the workspace; bob edits it.
  const alice = server.admin("token", "--email", "alice@example.com").trim();
  const bob = server.admin("token", "--email", "bob@example.com").trim();
  const bobId = (await api(bob, "GET", "/v1/me")).user.id;
  await api(alice, "POST", "/v1/spaces", { id: "ws", name: "Workspace" });
  await api(alice, "PUT", `/v1/spaces/ws/members/${bobId}`, { role: "editor" });
  await api(alice, "PUT", "/v1/spaces/ws/collections/cards/records/alices", { fields: { title: "alice's" } });

  const context = await browser.newContext();
  const page = await openDemo(context, server);
  await signIn(page, server, "bob@example.com");
  await eventually(async () => {
    await page.evaluate(async () => {
      await window.ferry.track("ws");
      await window.ferry.sync();
    });
    assert.equal(await page.evaluate(async () => (await window.ferry.appSchema()).version), 1);
    const cards = await page.evaluate(async () => (await window.ferry.list("ws", "cards")).map((r) => r.id));
    assert.deepEqual(cards, ["alices"]);
  }, "the schema and alice's card in bob's replica");

  const tries = await page.evaluate(async () => {
    const f = window.ferry;
    const attempt = async (what, write) => {
      try {
        await write();
        return { what, ok: true };
      } catch (e) {
        return { what, code: e.code, rule: e.details?.rule, field: e.details?.field ?? null };
      }
    };
    return [
      await attempt("settings", () => f.put("ws", "settings", "s", { theme: "dark" })),
      await attempt("alice's card", () => f.patch("ws", "cards", "alices", { title: "mine" })),
      await attempt("delete alice's card", () => f.delete("ws", "cards", "alices")),
      await attempt("created_by", () => f.put("ws", "cards", "b0", { title: "x", created_by: "bob" })),
      await attempt("own card", () => f.put("ws", "cards", "bobs", { title: "bob's" })),
      await attempt("edit own card", () => f.patch("ws", "cards", "bobs", { title: "bob's!" })),
    ];
  });
  assert.deepEqual(tries, [
    { what: "settings", code: "forbidden", rule: "create", field: null },
    { what: "alice's card", code: "forbidden", rule: "author", field: null },
    { what: "delete alice's card", code: "forbidden", rule: "author", field: null },
    { what: "created_by", code: "forbidden", rule: "server_only", field: "created_by" },
    { what: "own card", ok: true },
    { what: "edit own card", ok: true },
  ]);
  await page.evaluate(() => window.ferry.sync());
  await waitForStatus(page, "idle", 0);
  assert.deepEqual(await page.evaluate(() => window.ferry.rejected()), []);
  // The server took bob's card, as his.
  const card = await api(alice, "GET", "/v1/spaces/ws/collections/cards/records/bobs");
  assert.equal(card.author, bobId);
  assert.equal(card.fields.title.value, "bob's!");
  assert.equal(
    (await api(alice, "GET", "/v1/spaces/ws/collections/settings/records")).records.length,
    0,
    "a refused write reached the server",
  );
  // The server sets a server-only field; bob puts his card anew: the
  // field stays, and the put syncs.
  await api(alice, "PATCH", "/v1/spaces/ws/collections/cards/records/bobs", { fields: { created_by: bobId } });
  await page.evaluate(() => window.ferry.sync());
  await page.evaluate(() => window.ferry.put("ws", "cards", "bobs", { title: "put anew" }));
  await page.evaluate(() => window.ferry.sync());
  await waitForStatus(page, "idle", 0);
  assert.deepEqual(await page.evaluate(() => window.ferry.rejected()), []);
  const put = await api(alice, "GET", "/v1/spaces/ws/collections/cards/records/bobs");
  assert.equal(put.fields.created_by.value, bobId);
  assert.equal(put.fields.title.value, "put anew");
  await context.close();
});
