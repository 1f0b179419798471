// The todo demo in React (`/react`, examples/todo/src/react), in a real
// headless Chromium against a real `ferry serve`: two windows (two
// devices) converge, a filtered and ordered list (`useQuery`) changes as
// the other window edits, and edits made offline sync when the connection
// is back.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { eventually, launch, screenshot, startServer, twoDevices } from "./helpers.mjs";

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

/** Opens the React demo in `page` (signed in on the main demo before). */
async function openReact(page) {
  await page.goto(`${server.url}/react`);
  await page.waitForSelector("body[data-ready=true]");
  await page.waitForSelector("[data-testid=user]");
}

function shown(page) {
  return page.$$eval("[data-testid=todo] .title", (els) => els.map((e) => e.textContent));
}

async function waitShown(page, titles, what) {
  await eventually(async () => assert.deepEqual(await shown(page), titles), `${what}: ${JSON.stringify(titles)}`);
}

async function add(page, title) {
  await page.fill("#new-title", title);
  await page.press("#new-title", "Enter");
}

test("the React demo: two windows converge, a filtered list follows the other's edits, offline edits sync", async () => {
  const { a, b, pageA, pageB } = await twoDevices(browser, server, "react@example.com");
  await openReact(pageA);
  await openReact(pageB);

  // Added in A, shown in B (ordered by age).
  await add(pageA, "Milk");
  await add(pageA, "Apples");
  await waitShown(pageA, ["Milk", "Apples"], "A's own list");
  await waitShown(pageB, ["Milk", "Apples"], "B's list");

  // B shows the active todos by title; A's edits move rows in and out.
  await pageB.click("[data-filter=active]");
  await pageB.click("[data-order=title]");
  await waitShown(pageB, ["Apples", "Milk"], "B by title");
  await add(pageA, "Bread");
  await waitShown(pageB, ["Apples", "Bread", "Milk"], "A's new todo in B's filtered list");
  await pageA.locator("[data-testid=todo]", { hasText: "Apples" }).locator("input[type=checkbox]").click();
  await waitShown(pageB, ["Bread", "Milk"], "A's done todo leaving B's list");
  assert.equal(await pageB.textContent("[data-testid=count]"), "2 items left");
  await pageB.click("[data-filter=done]");
  await waitShown(pageB, ["Apples"], "B's done list");

  // Offline in A: edits stay local, then sync when the connection is back.
  await a.setOffline(true);
  await add(pageA, "Offline eggs");
  await pageA.locator("[data-testid=todo]", { hasText: "Milk" }).locator("button.delete").click();
  await waitShown(pageA, ["Apples", "Bread", "Offline eggs"], "A's list offline");
  await pageB.click("[data-filter=all]");
  await waitShown(pageB, ["Apples", "Bread", "Milk"], "B before A is back");
  await a.setOffline(false);
  await pageA.evaluate(() => window.ferry.sync());
  await waitShown(pageB, ["Apples", "Bread", "Offline eggs"], "A's offline edits in B");
  await eventually(async () => assert.equal(await pageA.getAttribute("[data-testid=status]", "data-pending"), "0"), "A synced");
  await screenshot(pageB, "react-demo");
  await a.close();
  await b.close();
});
