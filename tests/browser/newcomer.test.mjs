// What a person trying the todo demo for the first time meets, in a real
// headless Chromium against a real `ferry serve`: a sign-in link that no
// longer works says so, nothing claims to be pending before there is a
// server to send it to, the tab that syncs for the others is named only
// when there are others, every todo's delete button can be reached without
// a mouse, and the page has an icon.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { addTodo, eventually, launch, openDemo, screenshot, signIn, startServer, waitForTitles } from "./helpers.mjs";

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

test("a used sign-in link says why it did not sign in, and a new one does", async () => {
  // One browser redeems a link.
  const first = await browser.newContext();
  const one = await openDemo(first, server);
  await one.fill("#email", "twice@example.com");
  await one.click("#signin-form button");
  const link = await server.linkFor("twice@example.com");
  await one.goto(link);
  await one.waitForSelector("body[data-ready=true]");
  await one.click("#finish-button");
  await one.waitForSelector("#signed-in:not([hidden])");

  // Another browser opens the same link, already used.
  const second = await browser.newContext();
  const two = await openDemo(second, server);
  await two.goto(link);
  await two.waitForSelector("body[data-ready=true]");
  await two.click("#finish-button");
  // Back at the form, with the reason in plain sight.
  await two.waitForSelector("#signed-out:not([hidden])");
  const note = two.locator("#signin-note");
  await eventually(async () => assert.equal(await note.isVisible(), true), "the note to be visible");
  const text = await note.textContent();
  assert.match(text, /did not sign you in/);
  assert.match(text, /already|expired|used/i);
  assert.match(text, /Ask for a new link/);
  assert.equal(await two.locator("#finish").isVisible(), false);
  await screenshot(two, "used-link");

  // And the form still works: a new link signs in.
  await signIn(two, server, "twice@example.com");
  await first.close();
  await second.close();
});

test("before sign-in nothing is called pending, and the status says where the todos are", async () => {
  const context = await browser.newContext();
  const page = await openDemo(context, server);
  await addTodo(page, "Written before signing in");
  await addTodo(page, "And another");
  await waitForTitles(page, ["And another", "Written before signing in"]);
  await eventually(async () => {
    assert.equal(await page.getAttribute("#status", "data-state"), "local");
    assert.equal(await page.textContent("#status-text"), "On this device");
  }, "the local status");
  // Signing in sends them, and only then is anything shown as syncing.
  await signIn(page, server, "pending@example.com");
  await eventually(async () => assert.equal(await page.textContent("#status-text"), "Synced"), "Synced");
  await context.close();
});

test("the tab that syncs for the others is named only while there are others", async () => {
  const context = await browser.newContext();
  const alone = await openDemo(context, server);
  await eventually(async () => assert.equal(await alone.evaluate(() => window.ferry.otherTabs()), 0), "one tab");
  assert.equal(await alone.locator("#tab-role").isVisible(), false);
  assert.doesNotMatch(await alone.locator(".foot").innerText(), /syncs for/);

  const second = await openDemo(context, server);
  for (const page of [alone, second]) {
    await eventually(async () => {
      assert.equal(await page.evaluate(() => window.ferry.otherTabs()), 1);
      assert.equal(await page.locator("#tab-role").isVisible(), true);
    }, "two tabs, each knowing of the other");
  }
  const roles = [await alone.textContent("#tab-role"), await second.textContent("#tab-role")].sort();
  assert.deepEqual(roles, ["Another tab syncs for this one.", "This tab syncs for the others."]);

  await second.close();
  await eventually(async () => assert.equal(await alone.locator("#tab-role").isVisible(), false), "alone again");
  await context.close();
});

test("a todo's delete button shows without a pointer and works from the keyboard", async () => {
  const context = await browser.newContext();
  const page = await openDemo(context, server);
  await addTodo(page, "Delete me by keyboard");
  await waitForTitles(page, ["Delete me by keyboard"]);
  // The pointer is away from the list.
  await page.mouse.move(0, 0);
  const remove = page.locator('[data-testid="todo"] .remove').first();
  const opacity = Number(await remove.evaluate((el) => getComputedStyle(el).opacity));
  assert.ok(opacity >= 0.5, `the delete button is hidden until hovered (opacity ${opacity})`);
  await remove.focus();
  await page.keyboard.press("Enter");
  await waitForTitles(page, []);

  // On a touch screen, fully shown.
  const touch = await browser.newContext({ hasTouch: true, isMobile: true });
  const phone = await openDemo(touch, server);
  await addTodo(phone, "On a phone");
  await waitForTitles(phone, ["On a phone"]);
  const shown = Number(await phone.locator('[data-testid="todo"] .remove').first().evaluate((el) => getComputedStyle(el).opacity));
  assert.equal(shown, 1);
  await touch.close();
  await context.close();
});

test("the page has an icon at /favicon.ico", async () => {
  const res = await fetch(`${server.url}/favicon.ico`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "image/x-icon");
  const bytes = new Uint8Array(await res.arrayBuffer());
  // An icon directory (reserved 0, type 1) holding one image.
  assert.deepEqual([...bytes.slice(0, 6)], [0, 0, 1, 0, 1, 0]);
  const context = await browser.newContext();
  const page = await openDemo(context, server);
  const href = await page.getAttribute('link[rel="icon"]', "href");
  assert.equal(href, "/favicon.ico");
  await context.close();
});
