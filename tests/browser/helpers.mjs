// Shared by the browser tests: a real `ferry serve` on port 0 (the binary
// cargo built, serving the embedded todo demo), a real headless Chromium
// (Debian's, driven by playwright-core), and the steps a person takes in
// the demo. Missing pieces fail loudly; nothing is skipped.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const TARGET = process.env.CARGO_TARGET_DIR ?? join(ROOT, "target");
export const SCREENSHOTS = join(TARGET, "browser-screenshots");

/** Chromium's flags for a machine without a network or a display. */
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

/**
 * Starts `ferry serve` on 127.0.0.1:0 with sign-in mail written to files,
 * with `extraArgs` added to its command line.
 */
export async function startServer(extraArgs = []) {
  const bin = process.env.FERRY_BIN ?? join(TARGET, "debug", "ferry");
  assert.ok(existsSync(bin), `the ferry binary is missing at ${bin}: build it with cargo build -p ferry-cli`);
  const dir = await mkdtemp(join(tmpdir(), "ferry-browser-"));
  const mailDir = join(dir, "mail");
  await mkdir(mailDir);
  const child = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--data-dir", join(dir, "data"), "--mail-dir", mailDir, ...extraArgs], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("ferry serve did not start within 30 s")), 30_000);
    child.on("exit", (code) => reject(new Error(`ferry serve exited with ${code}`)));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = /^Ferry listening on (http:\/\/\S+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
  });
  const used = new Set();
  return {
    url,
    /** The sign-in link of the newest unread mail to `email`. */
    async linkFor(email) {
      return eventually(async () => {
        for (const name of (await readdir(mailDir)).sort().reverse()) {
          if (!name.endsWith(".eml") || used.has(name)) continue;
          const text = await readFile(join(mailDir, name), "utf8");
          if (!text.includes(`To: ${email}`)) continue;
          const link = /(http:\/\/\S+\/auth\/magic-link#token=[A-Za-z0-9_-]+)/.exec(text);
          assert.ok(link, `no link in the mail:\n${text}`);
          used.add(name);
          return link[1];
        }
        throw new Error(`no mail to ${email} yet`);
      }, `a sign-in mail to ${email}`);
    },
    /** Runs `ferry admin ...` on this server's database; returns its output. */
    admin(...args) {
      return execFileSync(bin, ["admin", ...args, "--data-dir", join(dir, "data")], { encoding: "utf8" });
    },
    /** Runs `ferry ...args` on this server's database; returns its output. */
    ferry(...args) {
      return execFileSync(bin, [...args, "--data-dir", join(dir, "data")], { encoding: "utf8" });
    },
    /** A Prometheus counter's value (the first line holding `labels`). */
    async metric(name, labels = "") {
      const text = await (await fetch(`${url}/metrics`)).text();
      const line = text
        .split("\n")
        .find((l) => (l.startsWith(`${name} `) || l.startsWith(`${name}{`)) && l.includes(labels));
      return line ? Number(line.split(" ").pop()) : 0;
    },
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => (child.exitCode !== null ? r() : child.on("exit", r)));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export async function launch() {
  const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
  assert.ok(existsSync(executablePath), `Chromium is missing at ${executablePath}: apt-get install chromium (or set CHROMIUM)`);
  return chromium.launch({ executablePath, args: CHROMIUM_ARGS, headless: true });
}

/** Retries `f` until it stops throwing, for up to `ms`. */
export async function eventually(f, what, ms = 15_000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      return await f();
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}: ${last?.message ?? last}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Opens the demo in a new page of `context` and waits until it is ready. */
export async function openDemo(context, server) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  page.on("dialog", (d) => {
    console.error(`dialog: ${d.message()}`);
    void d.dismiss();
  });
  await page.goto(server.url);
  await page.waitForSelector("body[data-ready=true]");
  return page;
}

/** Signs `page` in as `email` through the magic link, as a person would. */
export async function signIn(page, server, email) {
  await page.fill("#email", email);
  await page.click("#signin-form button");
  await page.waitForSelector("#signin-note:not([hidden])");
  const link = await server.linkFor(email);
  await page.goto(link);
  await page.waitForSelector("body[data-ready=true]");
  await page.click("#finish-button");
  await page.waitForSelector("#signed-in:not([hidden])");
  assert.equal(await page.textContent("#user-email"), email);
}

/**
 * Two browsers (contexts: two devices) with the demo open, both signed in
 * as `email`.
 */
export async function twoDevices(browser, server, email) {
  const [a, b] = [await browser.newContext(), await browser.newContext()];
  const pageA = await openDemo(a, server);
  await signIn(pageA, server, email);
  const pageB = await openDemo(b, server);
  await signIn(pageB, server, email);
  return { a, b, pageA, pageB };
}

export async function addTodo(page, title) {
  await page.fill("#new-title", title);
  await page.press("#new-title", "Enter");
}

export async function titles(page) {
  return page.$$eval("[data-testid=todo] .title", (els) => els.map((e) => e.textContent).sort());
}

/** Waits until `page` shows exactly `expected` (in any order). */
export async function waitForTitles(page, expected, what = "the todos") {
  const want = [...expected].sort();
  await eventually(async () => assert.deepEqual(await titles(page), want), `${what} to be ${JSON.stringify(want)}`);
}

/** Waits until the status indicator says `state` (`idle`, `offline`, ...). */
export async function waitForStatus(page, state, pending) {
  await eventually(async () => {
    const el = await page.$("#status");
    assert.equal(await el.getAttribute("data-state"), state);
    if (pending !== undefined) assert.equal(await el.getAttribute("data-pending"), String(pending));
  }, `status ${state}${pending === undefined ? "" : ` with ${pending} pending`}`);
}

/**
 * Reads the signed-in session from the replica of the app `name` (for
 * checks at the server).
 */
export async function session(page, name = "todo") {
  return page.evaluate(
    (db) =>
      new Promise((resolve, reject) => {
        const req = indexedDB.open(db);
        req.onsuccess = () => {
          const get = req.result.transaction("meta").objectStore("meta").get("session");
          get.onsuccess = () => resolve(get.result);
          get.onerror = () => reject(get.error);
        };
        req.onerror = () => reject(req.error);
      }),
    `ferry-${name}`,
  );
}

export async function screenshot(page, name) {
  await mkdir(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm" };

/**
 * Serves the files of `dir` on 127.0.0.1, port 0: pages of an origin that
 * is not Ferry's. Resolves to `{ url, close }`.
 */
export async function serveStatic(dir, extra = {}) {
  const server = createServer(async (req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    const name = normalize(path.replace(/^\/+/, "") || "index.html").replace(/^(\.\.[/\\])+/, "");
    try {
      const body = name in extra ? extra[name] : await readFile(join(dir, name));
      res.writeHead(200, { "Content-Type": TYPES[extname(name)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}
