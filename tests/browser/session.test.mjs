// Sessions and sync pauses in the browser client, against a server whose
// access tokens expire within seconds (refreshes while two tabs write, the
// realtime connection across expiries), and against one that requires a
// plan for sync (a 402 pauses sync without touching local data).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import {
  addTodo,
  eventually,
  launch,
  openDemo,
  screenshot,
  signIn,
  startServer,
  titles,
  waitForStatus,
  waitForTitles,
} from "./helpers.mjs";

let server;
let browser;

before(async () => {
  server = await startServer(["--access-token-ttl", "3s"]);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("expiring access tokens are refreshed and the session lives on in every tab", async () => {
  const context = await browser.newContext();
  const tabs = [await openDemo(context, server), await openDemo(context, server)];
  await signIn(tabs[0], server, "refresh@example.com");
  await tabs[1].waitForSelector("#signed-in:not([hidden])");
  const other = await browser.newContext();
  const elsewhere = await openDemo(other, server);
  await signIn(elsewhere, server, "refresh@example.com");

  // Several expiries pass while both tabs write and sync.
  const expected = [];
  for (let round = 0; round < 3; round++) {
    await new Promise((r) => setTimeout(r, 3500));
    for (const [i, tab] of tabs.entries()) {
      const title = `Round ${round} from tab ${i}`;
      expected.push(title);
      await addTodo(tab, title);
    }
    // Live: carried by the realtime connection, re-established each time
    // its token expired.
    await waitForTitles(elsewhere, expected, `round ${round} in the other browser`);
  }
  for (const tab of tabs) {
    await waitForStatus(tab, "idle", 0);
    assert.equal(await tab.evaluate(() => window.ferry.user?.email), "refresh@example.com");
  }
  // A refresh token spent twice would have ended the session everywhere.
  await addTodo(elsewhere, "Still signed in");
  await waitForTitles(tabs[0], [...expected, "Still signed in"]);
  await context.close();
  await other.close();
});

test("the billing gate pauses sync, keeps every local write, and sync resumes with the plan", async () => {
  const gated = await startServer(["--billing-required-plan", "pro"]);
  try {
    const context = await browser.newContext();
    const page = await openDemo(context, gated);
    await addTodo(page, "Before signing in");
    await signIn(page, gated, "unpaid@example.com");
    await waitForStatus(page, "paused", 1);
    assert.match(await page.getAttribute("#status", "title"), /pro/);
    // Another round may start meanwhile (a realtime signal): the note keeps
    // the pause's words.
    await eventually(
      async () => assert.match(await page.textContent("[data-testid=sync-note]"), /pro.*stay on this device/),
      "the pause's note",
    );
    await addTodo(page, "During the pause");
    await page.check("[data-testid=todo]:has-text('Before signing in') input[type=checkbox]");
    await waitForStatus(page, "paused", 3);
    assert.deepEqual(await titles(page), ["Before signing in", "During the pause"]);
    await screenshot(page, "paused");

    // Support staff grant the plan; the next sync carries everything, and
    // the realtime subscription the gate refused goes through.
    gated.admin("entitlement", "set", "--email", "unpaid@example.com", "--plan", "pro", "--until", "2099-12-31");
    await page.evaluate(() => window.ferry.sync());
    await waitForStatus(page, "idle", 0);
    const other = await browser.newContext();
    const elsewhere = await openDemo(other, gated);
    await signIn(elsewhere, gated, "unpaid@example.com");
    await waitForTitles(elsewhere, ["Before signing in", "During the pause"]);
    await eventually(
      async () => assert.equal(await elsewhere.isChecked("[data-testid=todo]:has-text('Before signing in') input[type=checkbox]"), true),
      "the check made during the pause",
    );
    await addTodo(elsewhere, "Live again");
    await waitForTitles(page, ["Before signing in", "During the pause", "Live again"], "a live update in the first browser");
    await context.close();
    await other.close();
  } finally {
    await gated.stop();
  }
});
