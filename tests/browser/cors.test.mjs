// The browser client in a page of another origin than the Ferry server's
// (an app at app.example.com syncing with api.example.com): it works when
// the server lists the page's origin in allowed_origins, and the browser
// refuses it otherwise.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { ROOT, eventually, launch, serveStatic, session, startServer } from "./helpers.mjs";

const PAGE = `<!doctype html><meta charset="utf-8"><title>Another origin</title>
<script type="module">
  import { Ferry } from "./ferry.js";
  const server = new URLSearchParams(location.search).get("server");
  window.ferry = await Ferry.open({ server, name: "elsewhere" });
  document.body.dataset.ready = "true";
</script>`;

let app;
let browser;

before(async () => {
  app = await serveStatic(join(ROOT, "clients/js/dist"), { "index.html": PAGE });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  app?.close();
});

async function open(server) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${app.url}/index.html?server=${encodeURIComponent(server.url)}`);
  await page.waitForSelector("body[data-ready=true]", { state: "attached" });
  return { context, page };
}

test("a page of a listed origin signs in, syncs and hears live updates", async () => {
  const server = await startServer(["--allowed-origins", app.url]);
  try {
    const { context, page } = await open(server);
    await page.evaluate((email) => window.ferry.requestMagicLink(email), "far@example.com");
    const token = new URL((await server.linkFor("far@example.com")).replace("#", "?")).searchParams.get("token");
    await page.evaluate((t) => window.ferry.signInWithLink(t), token);
    const space = await page.evaluate(() => window.ferry.personalSpace());
    await page.evaluate((s) => window.ferry.put(s, "notes", "n1", { text: "from afar" }), space);
    await page.evaluate(() => window.ferry.sync());
    const { accessToken } = await session(page, "elsewhere");
    const record = await (
      await fetch(`${server.url}/v1/spaces/${space}/collections/notes/records/n1`, {
        headers: { Authorization: `Bearer ${accessToken}` },
      })
    ).json();
    assert.equal(record.fields.text.value, "from afar");
    // A write made elsewhere arrives over the realtime connection.
    const put = await fetch(`${server.url}/v1/spaces/${space}/collections/notes/records/n2`, {
      method: "PUT",
      headers: { Authorization: `Bearer ${accessToken}`, "Content-Type": "application/json" },
      body: JSON.stringify({ fields: { text: "from the server" } }),
    });
    assert.equal(put.status, 200);
    await eventually(
      async () =>
        assert.equal(
          (await page.evaluate((s) => window.ferry.get(s, "notes", "n2"), space))?.fields.text,
          "from the server",
        ),
      "the live update",
    );
    await context.close();
  } finally {
    await server.stop();
  }
});

test("a page of an origin that is not listed cannot use the server", async () => {
  const server = await startServer();
  try {
    const { context, page } = await open(server);
    const error = await page.evaluate(async () => {
      try {
        await window.ferry.requestMagicLink("near@example.com");
        return null;
      } catch (e) {
        return { name: e.name, code: e.code };
      }
    });
    assert.deepEqual(error, { name: "FerryError", code: "offline" });
    await context.close();
  } finally {
    await server.stop();
  }
});
