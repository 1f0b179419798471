// The framework bindings (docs/live-queries.md) with the real frameworks
// from npm, in a real headless Chromium against a real `ferry serve`: a
// React component (`useQuery`, under StrictMode), a Svelte 5 component (a
// store read with `$` and with runes) and a SolidJS view (`createQuery`)
// each render the open todos by title, and stay current as this tab,
// another tab and another device write; the rows a write did not change
// keep their DOM (and, in React, are not rendered again).
//
// Each app is bundled here with esbuild from tests/browser/bindings/,
// importing the client as an app does (`@ferry-sync/client/react`, ...,
// resolved to the built clients/js/dist).

import assert from "node:assert/strict";
import { copyFile, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";

import { build } from "esbuild";
import { compile } from "svelte/compiler";

import { ROOT, eventually, launch, serveStatic, startServer } from "./helpers.mjs";

const APPS = join(ROOT, "tests/browser/bindings");
const DIST = join(ROOT, "clients/js/dist");
const FRAMEWORKS = { react: "react.jsx", svelte: "svelte.js", solid: "solid.js" };

/** `@ferry-sync/client[/sub]` as an app imports it: the built package. */
const client = {
  name: "ferry-client",
  setup(b) {
    b.onResolve({ filter: /^@ferry-sync\/client(\/(react|svelte|solid))?$/ }, (a) => {
      const sub = a.path.split("/")[2];
      return { path: join(DIST, sub ? `${sub}.js` : "ferry.js") };
    });
  },
};

/** Svelte components compiled by Svelte's own compiler. */
const svelte = {
  name: "svelte",
  setup(b) {
    b.onLoad({ filter: /\.svelte$/ }, async (a) => {
      const source = await readFile(a.path, "utf8");
      const out = compile(source, { filename: a.path, generate: "client" });
      return { contents: out.js.code, loader: "js", resolveDir: dirname(a.path) };
    });
  },
};

let out;
let app;
let server;
let browser;

before(async () => {
  out = await mkdtemp(join(tmpdir(), "ferry-bindings-"));
  await mkdir(out, { recursive: true });
  for (const [name, entry] of Object.entries(FRAMEWORKS)) {
    await build({
      entryPoints: [join(APPS, entry)],
      outfile: join(out, `${name}.js`),
      bundle: true,
      format: "esm",
      target: "es2022",
      jsx: "automatic",
      conditions: ["svelte", "browser"],
      define: { "process.env.NODE_ENV": '"production"' },
      plugins: [client, svelte],
      logLevel: "warning",
    });
  }
  await copyFile(join(DIST, "ferry_wasm_bg.wasm"), join(out, "ferry_wasm_bg.wasm"));
  const page = (name) =>
    `<!doctype html><meta charset="utf-8"><title>${name}</title><div id="app"></div><script type="module" src="./${name}.js"></script>`;
  app = await serveStatic(out, Object.fromEntries(Object.keys(FRAMEWORKS).map((n) => [`${n}.html`, page(n)])));
  server = await startServer(["--allowed-origins", app.url]);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  app?.close();
  if (out) await rm(out, { recursive: true, force: true });
});

async function openApp(context, framework) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`${framework} page error: ${e.message}`));
  await page.goto(`${app.url}/${framework}.html?server=${encodeURIComponent(server.url)}`);
  await page.waitForSelector("body[data-ready=true]", { state: "attached" });
  return page;
}

/** Signs the page's replica in as `email` by the magic link, then reloads the app. */
async function signIn(page, email) {
  await page.evaluate((e) => window.ferry.requestMagicLink(e), email);
  const token = new URL((await server.linkFor(email)).replace("#", "?")).searchParams.get("token");
  await page.evaluate((t) => window.ferry.signInWithLink(t), token);
  await page.reload();
  await page.waitForSelector("body[data-ready=true]", { state: "attached" });
}

function shown(page) {
  return page.$$eval("#list li .title", (els) => els.map((e) => e.textContent));
}

async function waitShown(page, titles, what) {
  await eventually(async () => {
    assert.deepEqual(await shown(page), titles);
    assert.equal(await page.getAttribute("#status", "data-query"), "complete");
  }, what);
}

function write(page, op, id, fields) {
  return page.evaluate(
    ([op, id, fields]) => window.ferry[op](window.ferry.personalSpace(), "todos", id, fields),
    [op, id, fields],
  );
}

for (const framework of Object.keys(FRAMEWORKS)) {
  test(`${framework}: a filtered, ordered list stays current as this tab, another tab and another device write`, async () => {
    const email = `${framework}@example.com`;
    const [a, b] = [await browser.newContext(), await browser.newContext()];
    const page = await openApp(a, framework);
    await signIn(page, email);
    await waitShown(page, [], "the empty list");

    // This tab.
    await write(page, "put", "a", { title: "Apples", done: false });
    await write(page, "put", "b", { title: "Bread", done: false });
    await write(page, "put", "c", { title: "Cheese", done: true });
    await write(page, "put", "d", { title: "Dates", done: false });
    await waitShown(page, ["Apples", "Bread", "Dates"], "this tab's writes");

    // A row changes in place: the others keep their DOM and are not
    // rendered again.
    await page.evaluate(() => window.markRows());
    const renders = await page.evaluate(() => ({ ...window.renders }));
    await write(page, "patch", "b", { title: "Brioche" });
    await waitShown(page, ["Apples", "Brioche", "Dates"], "the row changed in place");
    assert.deepEqual(
      await page.evaluate(() => ({ a: window.rowKept("a"), d: window.rowKept("d") })),
      { a: true, d: true },
      "unchanged rows keep their DOM",
    );
    if (framework === "react") {
      const now = await page.evaluate(() => ({ ...window.renders }));
      assert.equal(now.a, renders.a, "Apples not rendered again");
      assert.equal(now.d, renders.d, "Dates not rendered again");
      assert.ok(now.b > renders.b, "Brioche rendered");
    }
    if (framework === "svelte") assert.equal(await page.getAttribute("#status", "data-count"), "3");

    // Another tab of the same app.
    const other = await openApp(a, framework);
    await write(other, "put", "e", { title: "Eggs", done: false });
    await waitShown(page, ["Apples", "Brioche", "Dates", "Eggs"], "another tab's write");
    await other.close();

    // Another device.
    const device = await openApp(b, framework);
    await signIn(device, email);
    await waitShown(device, ["Apples", "Brioche", "Dates", "Eggs"], "the other device's first sync");
    await write(device, "patch", "a", { done: true });
    await write(device, "put", "f", { title: "Figs", done: false });
    await waitShown(page, ["Brioche", "Dates", "Eggs", "Figs"], "another device's writes");
    assert.equal(await page.getAttribute("#status", "data-sync"), "idle");
    await a.close();
    await b.close();
  });
}
