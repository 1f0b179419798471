// The todo demo on Ferry's browser client, in a real headless Chromium
// against a real `ferry serve`: what a person sees in two windows, offline,
// in several tabs, across a reload, and as two different people.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  addTodo,
  eventually,
  launch,
  openDemo,
  screenshot,
  session,
  signIn,
  startServer,
  titles,
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

test("two browsers signed in as the same person converge, anonymous todos included", async () => {
  const [a, b] = [await browser.newContext(), await browser.newContext()];
  const pageA = await openDemo(a, server);
  await waitForStatus(pageA, "local");
  // Before signing in, todos stay in this browser...
  await addTodo(pageA, "Written before signing in");
  await waitForTitles(pageA, ["Written before signing in"]);
  await screenshot(pageA, "signed-out");
  // ...and signing in moves them into the account.
  await signIn(pageA, server, "ada@example.com");
  await waitForStatus(pageA, "idle", 0);

  const pageB = await openDemo(b, server);
  await signIn(pageB, server, "ada@example.com");
  await waitForTitles(pageB, ["Written before signing in"], "the claimed todo in the other browser");

  await addTodo(pageA, "Milk");
  await waitForTitles(pageB, ["Milk", "Written before signing in"]);
  await addTodo(pageB, "Eggs");
  await pageB.check("[data-testid=todo]:has-text('Milk') input[type=checkbox]");
  await waitForTitles(pageA, ["Eggs", "Milk", "Written before signing in"]);
  await eventually(
    async () => assert.equal(await pageA.isChecked("[data-testid=todo]:has-text('Milk') input[type=checkbox]"), true),
    "Milk to be done in the first browser",
  );
  await pageA.click("[data-testid=todo]:has-text('Eggs') .remove");
  await waitForTitles(pageB, ["Milk", "Written before signing in"]);
  await waitForStatus(pageA, "idle", 0);
  await waitForStatus(pageB, "idle", 0);
  await screenshot(pageA, "synced-a");
  await screenshot(pageB, "synced-b");
  await a.close();
  await b.close();
});

test("edits made offline sync when the connection is back", async () => {
  const { a, b, pageA, pageB } = await twoDevices(browser, server, "olga@example.com");
  await addTodo(pageA, "Online");
  await waitForTitles(pageB, ["Online"]);

  await b.setOffline(true);
  await waitForStatus(pageB, "offline");
  await addTodo(pageB, "Made offline");
  await pageB.check("[data-testid=todo]:has-text('Online') input[type=checkbox]");
  await waitForStatus(pageB, "offline", 2);
  await screenshot(pageB, "offline");
  // The other browser hears nothing while this one is offline.
  await new Promise((r) => setTimeout(r, 1000));
  assert.deepEqual(await titles(pageA), ["Online"]);

  await b.setOffline(false);
  await waitForTitles(pageA, ["Made offline", "Online"]);
  await eventually(
    async () => assert.equal(await pageA.isChecked("[data-testid=todo]:has-text('Online') input[type=checkbox]"), true),
    "the offline check to arrive",
  );
  await waitForStatus(pageB, "idle", 0);
  await a.close();
  await b.close();
});

test("two tabs elect one leader, see each other's edits at once, and hand over", async () => {
  const context = await browser.newContext();
  const first = await openDemo(context, server);
  const second = await openDemo(context, server);
  await signIn(first, server, "tabs@example.com");
  // The other tab hears of the sign-in over the BroadcastChannel.
  await second.waitForSelector("#signed-in:not([hidden])");
  const leaders = async () => [
    await first.evaluate(() => window.ferry.isLeader),
    await second.evaluate(() => window.ferry.isLeader),
  ];
  await eventually(async () => assert.equal((await leaders()).filter(Boolean).length, 1), "exactly one leader");
  const [firstLeads] = await leaders();
  const [leader, follower] = firstLeads ? [first, second] : [second, first];

  // Only the leader talks to the server.
  const followerSyncs = [];
  follower.on("request", (r) => {
    if (r.url().includes("/v1/")) followerSyncs.push(r.url());
  });
  await addTodo(follower, "From the follower");
  await waitForTitles(leader, ["From the follower"], "the follower's todo in the leader");
  await addTodo(leader, "From the leader");
  await waitForTitles(follower, ["From the follower", "From the leader"], "the leader's todo in the follower");
  await waitForStatus(follower, "idle", 0);
  assert.deepEqual(followerSyncs, [], "a tab that is not the leader made requests to the API");

  // A second browser of the same person gets both, so they reached the server.
  const other = await browser.newContext();
  const elsewhere = await openDemo(other, server);
  await signIn(elsewhere, server, "tabs@example.com");
  await waitForTitles(elsewhere, ["From the follower", "From the leader"]);

  // The leader closes; the other tab takes over and syncs.
  await leader.close();
  await eventually(async () => assert.equal(await follower.evaluate(() => window.ferry.isLeader), true), "the handover");
  await addTodo(follower, "After the handover");
  await waitForTitles(elsewhere, ["After the handover", "From the follower", "From the leader"]);
  await screenshot(follower, "new-leader");
  await context.close();
  await other.close();
});

test("a reload keeps unsynced edits and sends them once", async () => {
  const context = await browser.newContext();
  const page = await openDemo(context, server);
  await signIn(page, server, "reload@example.com");
  await waitForStatus(page, "idle", 0);
  const applied = await server.metric("ferry_changes_applied_total");
  const replayed = await server.metric("ferry_batches_replayed_total");

  // The server applies the batch, but its answer never arrives.
  let lost = 0;
  await page.route("**/v1/spaces/*/sync", async (route) => {
    if (lost === 0 && route.request().postDataJSON().changes?.length) {
      await route.fetch();
      lost += 1;
    }
    await route.abort();
  });
  await addTodo(page, "Sent once");
  await eventually(async () => assert.equal(lost, 1), "the lost answer");
  await waitForStatus(page, "offline", 1);
  await page.unroute("**/v1/spaces/*/sync");

  await page.reload();
  await page.waitForSelector("body[data-ready=true]");
  await waitForTitles(page, ["Sent once"], "the unsynced todo after the reload");
  await waitForStatus(page, "idle", 0);
  // The retry carried the same batch id: recognized, not applied again.
  assert.equal(await server.metric("ferry_batches_replayed_total"), replayed + 1);
  assert.equal(await server.metric("ferry_changes_applied_total"), applied + 1);
  const { accessToken, user } = await session(page);
  const res = await fetch(`${server.url}/v1/spaces/user:${user.id}/collections/todos/records`, {
    headers: { Authorization: `Bearer ${accessToken}` },
  });
  const { records } = await res.json();
  assert.deepEqual(
    records.map((r) => r.fields.title.value),
    ["Sent once"],
  );
  await context.close();
});

test("a second person never sees the first one's todos, and signing out wipes the browser", async () => {
  const [a, b] = [await browser.newContext(), await browser.newContext()];
  const ada = await openDemo(a, server);
  await signIn(ada, server, "private-ada@example.com");
  await addTodo(ada, "Ada's secret");
  // The todo shows once it is written (and queued), so that the status
  // below is the one after it, not the one before.
  await waitForTitles(ada, ["Ada's secret"]);
  await waitForStatus(ada, "idle", 0);
  const adaSession = await session(ada);

  const bob = await openDemo(b, server);
  await signIn(bob, server, "private-bob@example.com");
  await addTodo(bob, "Bob's own");
  await waitForTitles(bob, ["Bob's own"]);
  await waitForStatus(bob, "idle", 0);
  assert.deepEqual(await titles(bob), ["Bob's own"]);
  // Nor can Bob's session reach Ada's space directly.
  const bobSession = await session(bob);
  const status = await bob.evaluate(
    async ([space, token]) =>
      (await fetch(`/v1/spaces/${space}/changes?cursor=0`, { headers: { Authorization: `Bearer ${token}` } })).status,
    [`user:${adaSession.user.id}`, bobSession.accessToken],
  );
  assert.equal(status, 404);

  // Ada signs out: nothing of hers stays in this browser.
  await ada.click("#signout");
  await ada.waitForSelector("#signed-out:not([hidden])");
  await waitForTitles(ada, [], "an empty list after signing out");
  const left = await ada.evaluate(
    () =>
      new Promise((resolve) => {
        const req = indexedDB.open("ferry-todo");
        req.onsuccess = () => {
          const count = req.result.transaction("records").objectStore("records").count();
          count.onsuccess = () => resolve(count.result);
        };
      }),
  );
  assert.equal(left, 0);
  await a.close();
  await b.close();
});

test("the client refuses bad input with a clear error and writes nothing", async () => {
  const context = await browser.newContext();
  const page = await openDemo(context, server);
  const outcome = await page.evaluate(async () => {
    const f = window.ferry;
    const space = f.personalSpace();
    const attempts = [
      () => f.put(space, "to dos", "t1", { title: "x" }),
      () => f.put(space, "todos", "t 1", { title: "x" }),
      () => f.put("no spaces allowed", "todos", "t1", { title: "x" }),
      () => f.put(space, "todos", "t1", { _reserved: 1 }),
      () => f.put(space, "todos", "t1", [1, 2]),
      () => f.patch(space, "todos", "t1", {}),
      () => f.put(space, "todos", "t1", { big: "x".repeat(1024 * 1024 + 1) }),
      () => f.list(space, "todos", { where: [["done", "~", true]] }),
      () => f.resolve(12345, { keep: "mine" }),
    ];
    const errors = [];
    for (const attempt of attempts) {
      try {
        await attempt();
        errors.push(null);
      } catch (e) {
        errors.push({ name: e.name, code: e.code, message: e.message });
      }
    }
    await f.put(space, "todos", "gone", { title: "x" });
    await f.delete(space, "todos", "gone");
    try {
      await f.patch(space, "todos", "gone", { title: "back" });
      errors.push(null);
    } catch (e) {
      errors.push({ name: e.name, code: e.code, message: e.message });
    }
    return { errors, pending: f.status.pending, records: (await f.list(space, "todos")).length };
  });
  for (const e of outcome.errors) {
    assert.ok(e, "a bad call was accepted");
    assert.equal(e.name, "FerryError");
    assert.equal(e.code, "invalid");
    assert.ok(e.message.length > 10, e.message);
  }
  assert.match(outcome.errors[0].message, /collection/);
  assert.match(outcome.errors[3].message, /_reserved|field/);
  assert.match(outcome.errors[9].message, /deleted/);
  // Only the put and the delete of "gone" were written.
  assert.equal(outcome.records, 0);
  assert.equal(outcome.pending, 2);
  await context.close();
});

test("a shared space syncs to its members, and a viewer's writes are refused and undone", async () => {
  const [a, b] = [await browser.newContext(), await browser.newContext()];
  const owner = await openDemo(a, server);
  await signIn(owner, server, "team-owner@example.com");
  const viewer = await openDemo(b, server);
  await signIn(viewer, server, "team-viewer@example.com");
  const api = async (page, method, path, body) =>
    page.evaluate(
      async ([method, path, body, token]) => {
        const res = await fetch(path, {
          method,
          headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        return res.status;
      },
      [method, path, body, (await session(page)).accessToken],
    );
  assert.equal(await api(owner, "POST", "/v1/spaces", { id: "team-notes", name: "Team" }), 201);
  assert.equal(await api(owner, "POST", "/v1/spaces/team-notes/invites", { email: "team-viewer@example.com", role: "viewer" }), 201);

  await owner.evaluate(async () => {
    await window.ferry.track("team-notes");
    await window.ferry.put("team-notes", "notes", "n1", { text: "From the owner" });
    await window.ferry.sync();
  });
  const seen = await viewer.evaluate(async () => {
    await window.ferry.track("team-notes");
    await window.ferry.sync();
    return (await window.ferry.get("team-notes", "notes", "n1"))?.fields;
  });
  assert.deepEqual(seen, { text: "From the owner" });

  // The viewer edits locally; the server refuses; the edit moves to the
  // rejected list and the server's copy comes back. Nothing stays stuck.
  const after = await viewer.evaluate(async () => {
    const f = window.ferry;
    await f.patch("team-notes", "notes", "n1", { text: "From the viewer" });
    await f.put("team-notes", "notes", "n2", { text: "New from the viewer" });
    await f.sync();
    await f.sync();
    return {
      n1: (await f.get("team-notes", "notes", "n1"))?.fields,
      n2: await f.get("team-notes", "notes", "n2"),
      rejected: (await f.rejected()).map((r) => [r.code, r.change.id]),
      pending: f.status.pending,
    };
  });
  assert.deepEqual(after, {
    n1: { text: "From the owner" },
    n2: null,
    rejected: [
      ["forbidden", "n1"],
      ["forbidden", "n2"],
    ],
    pending: 0,
  });
  await a.close();
  await b.close();
});

test("a browser offline past the tombstone horizon pulls everything again and drops what is gone", async () => {
  const { a, b, pageA, pageB } = await twoDevices(browser, server, "horizon@example.com");
  await addTodo(pageA, "Keep");
  await addTodo(pageA, "Drop");
  await waitForTitles(pageB, ["Drop", "Keep"]);

  await b.setOffline(true);
  await waitForStatus(pageB, "offline");
  // B ticks Drop off while away; A deletes it. The delete wins, and B's
  // edit must not bring Drop back once the tombstone is compacted.
  await pageB.click("[data-testid=todo]:has-text('Drop') input[type=checkbox]");
  await pageA.click("[data-testid=todo]:has-text('Drop') .remove");
  await addTodo(pageA, "Added meanwhile");
  await waitForStatus(pageA, "idle", 0);
  // The delete's tombstone is compacted: B's cursor is now below the
  // horizon, and no incremental pull can tell it that Drop is gone.
  server.admin("compact", "--older-than", "0s");
  await addTodo(pageB, "Written offline");

  const expired = 'route="/v1/spaces/{space}/sync",method="POST",status="410"';
  assert.equal(await server.metric("ferry_http_requests_total", expired), 0);
  await b.setOffline(false);
  await waitForTitles(pageB, ["Added meanwhile", "Keep", "Written offline"], "the resynced list");
  assert.equal(await server.metric("ferry_http_requests_total", expired), 1);
  await waitForTitles(pageA, ["Added meanwhile", "Keep", "Written offline"]);
  await waitForStatus(pageB, "idle", 0);
  // B is told its edit lost to the delete.
  await eventually(
    async () => assert.match(await pageB.textContent("#conflict-list"), /deleted on another device/),
    "B's record_deleted conflict",
  );
  await pageA.reload();
  await waitForTitles(pageA, ["Added meanwhile", "Keep", "Written offline"], "A's list after a reload");
  await a.close();
  await b.close();
});
