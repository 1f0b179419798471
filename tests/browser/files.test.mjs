// Files in the browser client (docs/files.md §6), in a real headless
// Chromium against a real `ferry serve`: the demo's attachments between two
// devices and offline, resuming an upload the server holds part of, a file
// read before its author uploaded it, the cache's bound, and sign-out.

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { request } from "node:http";
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

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** A small valid PNG (one pixel of `rgb`), different per color. */
function png([r, g, b]) {
  return Buffer.from(
    `89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763${[r, g, b]
      .map((x) => x.toString(16).padStart(2, "0"))
      .join("")}00000000ffff03000006000557bfabd40000000049454e44ae426082`,
    "hex",
  );
}

/** The bytes an attachment's image shows on `page`, for the todo titled `title`, hashed. */
async function shownImage(page, title) {
  return page.evaluate(async (t) => {
    const li = [...document.querySelectorAll("[data-testid=todo]")].find((l) => l.querySelector(".title")?.textContent === t);
    const img = li?.querySelector("[data-testid=attachment][data-state=shown] img");
    if (!img) throw new Error(`no image shown on ${t}`);
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    const digest = await crypto.subtle.digest("SHA-256", bytes);
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  }, title);
}

async function attachInDemo(page, title, name, bytes) {
  const li = page.locator("[data-testid=todo]", { has: page.locator(".title", { hasText: title }) });
  await li.locator("input[type=file]").setInputFiles({ name, mimeType: "image/png", buffer: bytes });
}

test("an image attached in one window shows in the other, and an offline one uploads when back online", async () => {
  const { a, b, pageA, pageB } = await twoDevices(browser, server, "files@example.com");
  await addTodo(pageA, "With a picture");
  await waitForTitles(pageB, ["With a picture"]);
  const red = png([255, 0, 0]);
  await attachInDemo(pageA, "With a picture", "red.png", red);
  await eventually(async () => assert.equal(await shownImage(pageA, "With a picture"), sha256(red)), "the image in window A");
  // B gets the record by realtime, then the bytes once A uploaded them.
  await eventually(async () => assert.equal(await shownImage(pageB, "With a picture"), sha256(red)), "the image in window B", 30_000);
  const stored = await pageA.evaluate((h) => window.ferry.fileStatus(window.ferry.personalSpace(), h), sha256(red));
  assert.deepEqual(stored, { state: "synced" });
  await screenshot(pageB, "files-shown-in-other-window");

  // Offline: the attachment is kept and shown here, and waits.
  await a.setOffline(true);
  await waitForStatus(pageA, "offline");
  await addTodo(pageA, "Attached offline");
  const blue = png([0, 0, 255]);
  await attachInDemo(pageA, "Attached offline", "blue.png", blue);
  await eventually(async () => assert.equal(await shownImage(pageA, "Attached offline"), sha256(blue)), "the offline image in A");
  assert.deepEqual(await pageA.evaluate((h) => window.ferry.fileStatus(window.ferry.personalSpace(), h), sha256(blue)), {
    state: "local",
  });
  assert.equal(
    await pageA.textContent("[data-testid=attachment][data-sha256='" + sha256(blue) + "'] .upload-note"),
    "Uploads when online",
  );
  // Back online: the todo, then its image, reach B by themselves.
  await a.setOffline(false);
  await pageA.evaluate(() => window.dispatchEvent(new Event("online")));
  await waitForTitles(pageB, ["With a picture", "Attached offline"]);
  await eventually(async () => assert.equal(await shownImage(pageB, "Attached offline"), sha256(blue)), "the offline image in B", 30_000);
  await eventually(async () => {
    const s = await pageA.evaluate((h) => window.ferry.fileStatus(window.ferry.personalSpace(), h), sha256(blue));
    assert.equal(s.state, "synced");
  }, "the offline image synced");
  // The server holds exactly the bytes.
  const { accessToken, user } = await session(pageA);
  const got = await fetch(`${server.url}/v1/spaces/user:${user.id}/files/${sha256(blue)}`, {
    headers: { Authorization: `Bearer ${accessToken}` },
  });
  assert.equal(got.status, 200);
  assert.equal(sha256(Buffer.from(await got.arrayBuffer())), sha256(blue));
  await a.close();
  await b.close();
});

/** Sends the first `cut` bytes of `bytes` as an upload of it, then breaks the connection. */
function brokenUpload(url, token, bytes, cut) {
  return new Promise((resolve) => {
    const req = request(url, {
      method: "PUT",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/octet-stream", "Content-Length": bytes.length },
    });
    req.on("error", () => resolve());
    req.write(bytes.subarray(0, cut), () => setTimeout(() => {
      req.destroy();
      resolve();
    }, 300));
  });
}

test("the client's API: an upload resumes from what the server holds, a file read before its upload arrives by itself, a wipe forgets", async () => {
  const { a, b, pageA, pageB } = await twoDevices(browser, server, "api-files@example.com");
  const { accessToken, user } = await session(pageA);
  const space = `user:${user.id}`;
  const bytes = randomBytes(3 * 1024 * 1024);
  const hash = sha256(bytes);
  const url = `${server.url}/v1/spaces/${space}/files/${hash}`;
  await brokenUpload(url, accessToken, bytes, 1024 * 1024);
  const held = await eventually(async () => {
    const h = await fetch(url, { method: "HEAD", headers: { Authorization: `Bearer ${accessToken}` } });
    assert.equal(h.status, 404);
    const offset = Number(h.headers.get("ferry-upload-offset"));
    assert.ok(offset > 0 && offset < bytes.length, `offset ${offset}`);
    return offset;
  }, "the server holding part of the upload");

  const ranges = [];
  pageA.on("request", (r) => {
    if (r.method() === "PUT" && r.url().includes("/files/")) ranges.push(r.headers()["content-range"] ?? "whole");
  });
  const progress = [];
  await pageA.exposeFunction("heard", (e) => progress.push(e));
  const ref = await pageA.evaluate(
    async ([b64, space]) => {
      window.ferry.onFile((e) => window.heard(e));
      const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const ref = await window.ferry.attach(space, data, { name: "notes.bin", mediaType: "application/octet-stream" });
      await window.ferry.put(space, "todos", "resumed", { title: "Resumed", attachment: ref });
      await window.ferry.sync();
      return ref;
    },
    [bytes.toString("base64"), space],
  );
  assert.deepEqual(ref, { sha256: hash, size: bytes.length, media_type: "application/octet-stream", name: "notes.bin" });
  await eventually(async () => {
    assert.equal((await pageA.evaluate(([s, h]) => window.ferry.fileStatus(s, h), [space, hash])).state, "synced");
  }, "the resumed upload");
  assert.deepEqual(ranges, [`bytes ${held}-${bytes.length - 1}/${bytes.length}`], "only the rest was sent");
  assert.ok(progress.some((e) => e.state === "uploading" && e.total === bytes.length), JSON.stringify(progress.slice(0, 3)));
  assert.equal(progress.at(-1).state, "synced");
  // B downloads it, checked against its hash.
  const downloaded = await pageB.evaluate(async ([s, r]) => {
    await window.ferry.sync();
    const blob = await window.ferry.file(s, r);
    const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
    return Array.from(new Uint8Array(digest), (x) => x.toString(16).padStart(2, "0")).join("");
  }, [space, ref]);
  assert.equal(downloaded, hash);

  // An owner forgets the file on the server; attaching the same bytes
  // again uploads them again (what a device held says nothing of now).
  const forgot = await fetch(url, { method: "DELETE", headers: { Authorization: `Bearer ${accessToken}` } });
  assert.equal(forgot.status, 204);
  await pageA.evaluate(
    async ([b64, space]) => {
      const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      await window.ferry.attach(space, data, { name: "notes.bin" });
    },
    [bytes.toString("base64"), space],
  );
  await eventually(async () => {
    const h = await fetch(url, { method: "HEAD", headers: { Authorization: `Bearer ${accessToken}` } });
    assert.equal(h.status, 200);
  }, "the file uploaded again after the server forgot it", 20_000);

  // A record refers to a file nobody uploaded yet: B sees `missing`, not
  // an error, and gets the file once it arrives, without asking again.
  const later = Buffer.from("uploaded later by its author");
  const laterRef = { sha256: sha256(later), size: later.length, media_type: "text/plain" };
  await pageA.evaluate(([s, r]) => window.ferry.put(s, "todos", "later", { title: "Later", attachment: r }), [space, laterRef]);
  await waitForTitles(pageB, ["Resumed", "Later"]);
  const first = await pageB.evaluate(async ([s, r]) => {
    try {
      await window.ferry.file(s, r);
      return "read";
    } catch (e) {
      return [e.code, (await window.ferry.fileStatus(s, r.sha256)).state];
    }
  }, [space, laterRef]);
  assert.deepEqual(first, ["missing", "missing"]);
  const put = await fetch(`${server.url}/v1/spaces/${space}/files/${laterRef.sha256}`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${accessToken}`, "Content-Type": "text/plain" },
    body: later,
  });
  assert.equal(put.status, 201);
  await eventually(async () => {
    assert.equal((await pageB.evaluate(([s, h]) => window.ferry.fileStatus(s, h), [space, laterRef.sha256])).state, "synced");
  }, "the missing file arriving by itself", 20_000);

  // Bad input changes nothing.
  const refused = await pageA.evaluate(async (s) => {
    const codes = [];
    for (const bad of [{ sha256: "nope", size: 1, media_type: "text/plain" }, { sha256: "a".repeat(64), size: -1, media_type: "x" }]) {
      try {
        await window.ferry.file(s, bad);
      } catch (e) {
        codes.push(e.code);
      }
    }
    try {
      await window.ferry.attach("not a space!", new Uint8Array([1]));
    } catch (e) {
      codes.push(e.code);
    }
    return codes;
  }, space);
  assert.deepEqual(refused, ["invalid", "invalid", "invalid"]);

  // Sign-out with wipe leaves no file behind.
  await pageB.evaluate(() => window.ferry.signOut());
  const left = await pageB.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const req = indexedDB.open("ferry-todo");
        req.onsuccess = () => {
          const c = req.result.transaction("files").objectStore("files").count();
          c.onsuccess = () => resolve(c.result);
          c.onerror = () => reject(c.error);
        };
        req.onerror = () => reject(req.error);
      }),
  );
  assert.equal(left, 0);
  await a.close();
  await b.close();
});

test("the cache keeps at most its bound of downloaded bytes, least recently used out first, and never an upload", async () => {
  const { a, b, pageA } = await twoDevices(browser, server, "cache@example.com");
  await waitForStatus(pageA, "idle");
  const out = await pageA.evaluate(async () => {
    const small = await window.ferry.constructor.open({ name: "cache-bound", maxFileCacheBytes: 2500, realtime: false });
    const main = window.ferry;
    const space = main.personalSpace();
    // Three files of 1,000 bytes on the server, attached through the demo's replica.
    const refs = [];
    for (let i = 0; i < 3; i++) refs.push(await main.attach(space, new Uint8Array(1000).fill(i + 1)));
    await main.sync();
    // The uploads follow the round of records, in the queue's own loop.
    for (let i = 0; i < 200; i++) {
      const states = await Promise.all(refs.map((r) => main.fileStatus(space, r.sha256)));
      if (states.every((s) => s.state === "synced")) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    // The small replica signs in with the same session and reads them.
    const { accessToken } = await new Promise((resolve, reject) => {
      const req = indexedDB.open("ferry-todo");
      req.onsuccess = () => {
        const g = req.result.transaction("meta").objectStore("meta").get("session");
        g.onsuccess = () => resolve(g.result);
        g.onerror = () => reject(g.error);
      };
    });
    await small.signInWithToken(accessToken);
    for (const r of refs) await small.file(space, r);
    const states = [];
    for (const r of refs) states.push((await small.fileStatus(space, r.sha256)).state);
    // An attachment of 4,000 bytes in the device's own space: never uploaded, never evicted.
    const pinned = await small.attach("local:anonymous", new Uint8Array(4000).fill(9));
    const pinnedState = (await small.fileStatus("local:anonymous", pinned.sha256)).state;
    await small.file(space, refs[0]);
    const after = [];
    for (const r of refs) after.push((await small.fileStatus(space, r.sha256)).state);
    // Over the bound all along, the attachment waiting to upload stays.
    const pinnedAfter = (await small.fileStatus("local:anonymous", pinned.sha256)).state;
    const pinnedBytes = (await small.file("local:anonymous", pinned)).size;
    await small.signOut();
    small.close();
    return { states, pinnedState, after, pinnedAfter, pinnedBytes };
  });
  // The first was evicted when the third came (3,000 > 2,500).
  assert.deepEqual(out.states, ["remote", "synced", "synced"]);
  assert.equal(out.pinnedState, "local");
  // Reading the first again brings it back and evicts the least recently used (the second).
  assert.deepEqual(out.after, ["synced", "remote", "synced"]);
  assert.equal(out.pinnedAfter, "local");
  assert.equal(out.pinnedBytes, 4000);
  await a.close();
  await b.close();
});

test("files attached before signing in upload to the user's space once signed in", async () => {
  const context = await browser.newContext();
  const page = await openDemo(context, server);
  const bytes = randomBytes(5000);
  const ref = await page.evaluate(
    (b64) => window.ferry.attach("local:anonymous", Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)), { mediaType: "application/pdf" }),
    bytes.toString("base64"),
  );
  assert.equal(ref.sha256, sha256(bytes));
  assert.deepEqual(await page.evaluate((h) => window.ferry.fileStatus("local:anonymous", h), ref.sha256), { state: "local" });
  await signIn(page, server, "anonymous-files@example.com");
  const { accessToken, user } = await session(page);
  await eventually(async () => {
    const got = await fetch(`${server.url}/v1/spaces/user:${user.id}/files/${ref.sha256}`, {
      headers: { Authorization: `Bearer ${accessToken}` },
    });
    assert.equal(got.status, 200);
    assert.equal(sha256(Buffer.from(await got.arrayBuffer())), ref.sha256);
  }, "the anonymous attachment uploaded to the user's space", 20_000);
  assert.deepEqual(await page.evaluate((h) => window.ferry.fileStatus("local:anonymous", h), ref.sha256), { state: "remote" });
  await context.close();
});

test("a download on its way when its user signs out is stopped and nothing of it lands with the next person", async () => {
  const { a, b, pageA, pageB } = await twoDevices(browser, server, "signout-files@example.com");
  const { user } = await session(pageA);
  const space = `user:${user.id}`;
  const bytes = randomBytes(200_000);
  const ref = await pageA.evaluate(
    async ([b64, s]) => window.ferry.attach(s, Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))),
    [bytes.toString("base64"), space],
  );
  await eventually(async () => {
    assert.equal((await pageA.evaluate(([s, h]) => window.ferry.fileStatus(s, h), [space, ref.sha256])).state, "synced");
  }, "the upload");
  // B's download is held back by the network until B has signed out.
  let release;
  const held = new Promise((r) => (release = r));
  await pageB.route("**/files/*", async (route) => {
    if (route.request().method() !== "GET") return route.continue();
    const answer = await route.fetch();
    await held;
    await route.fulfill({ response: answer }).catch(() => undefined);
  });
  await pageB.evaluate(([s, r]) => {
    window.downloaded = window.ferry.file(s, r).then(
      () => "kept",
      (e) => e.code,
    );
  }, [space, ref]);
  // Another person signs in on B before the bytes land.
  const other = await browser.newContext();
  const otherPage = await openDemo(other, server);
  await signIn(otherPage, server, "next-person@example.com");
  const { accessToken: otherToken } = await session(otherPage);
  await pageB.evaluate(() => window.ferry.signOut());
  await pageB.evaluate((t) => window.ferry.signInWithToken(t), otherToken);
  release();
  const outcome = await pageB.evaluate(() => window.downloaded);
  assert.ok(["offline", "signed_out"].includes(outcome), outcome);
  await other.close();
  const left = await pageB.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const req = indexedDB.open("ferry-todo");
        req.onsuccess = () => {
          const tx = req.result.transaction(["files", "fileBlobs"]);
          const counts = [tx.objectStore("files").count(), tx.objectStore("fileBlobs").count()];
          tx.oncomplete = () => resolve(counts.map((c) => c.result));
          tx.onerror = () => reject(tx.error);
        };
        req.onerror = () => reject(req.error);
      }),
  );
  assert.deepEqual(left, [0, 0]);
  await a.close();
  await b.close();
});
