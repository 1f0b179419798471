// One validator (docs/schema.md): the browser client judges a write with
// ferry-core compiled to wasm, the server with the same code compiled
// natively. On generated writes (every field type, values of every kind,
// creates, patches and puts over an existing record, strict, open and
// undeclared collections) the two must give the same verdict: what the
// page refuses at the call the server refuses with the same rule and
// field, and what the page takes the server takes, both through REST and
// when the page's outbox syncs (nothing lands in the rejected list).
//
// FERRY_SEED=N replays a run; the seed is printed when the test fails.

import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { eventually, launch, openDemo, session, signIn, startServer, waitForStatus } from "./helpers.mjs";

const SCHEMA = {
  undeclared: "refuse",
  collections: {
    items: {
      mode: "strict",
      fields: {
        title: { type: "string", min_length: 1, max_length: 12, required: true },
        count: { type: "integer", min: -5, max: 100 },
        score: { type: "number", min: 0, nullable: true, required: true },
        done: { type: "boolean" },
        due: { type: "timestamp" },
        kind: { type: "enum", values: ["a", "b"] },
        meta: { type: "json" },
        tags: { type: "array", items: "string", max_items: 3, max_length: 5 },
        ids: { type: "array", items: "integer" },
        when: { type: "array", items: "timestamp" },
        parent: { type: "ref", collection: "items" },
      },
    },
    notes: {
      mode: "open",
      fields: {
        body: { type: "string", max_length: 20 },
        pinned: { type: "boolean", required: true },
      },
    },
  },
};

/** Values of every kind, each near some rule's edge. */
const VALUES = [
  null, true, false, 0, -0, 1, -1, 3, 7.5, -6, -5, 100, 101, 0.1, 2 ** 53 - 1, 2 ** 53, -(2 ** 53), 1e300, -1e-300,
  "", "a", "b", "c", "abcde", "abcdef", "abcdefghijkl", "abcdefghijklm", "é".repeat(12), "😀".repeat(12), "😀".repeat(13),
  "nul\u0000", "2026-12-02T14:00:00Z", "2026-12-02T14:00:00.123+01:00", "2026-12-02 14:00:00Z", "2026-13-02T14:00:00Z",
  "2026-12-02T23:59:60Z", "2026-12-02", "t1", "not an id/", "x".repeat(300),
  [], ["a"], ["abcde", "b"], ["abcdef"], ["a", "b", "c", "d"], [1, 2], [1.5], [2 ** 53], ["2026-12-02T14:00:00Z"], ["2026-12-02"],
  [null], [[1]], [true], {}, { a: 1 }, { nested: { deep: [1, { x: null }] } },
];
const FIELDS = {
  items: [...Object.keys(SCHEMA.collections.items.fields), "titel", "extra"],
  notes: ["body", "pinned", "colour"],
  misc: ["anything"],
};
/** A record of each collection that fits the schema, for patches and puts over it. */
const BASE = {
  items: { title: "base", count: 1, score: null, tags: ["a"] },
  notes: { body: "base", pinned: false },
  misc: {},
};

/** A small seeded generator (mulberry32), so that a failing run replays. */
function generator(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const pick = (list) => list[Math.floor(next() * list.length)];
  return { next, pick };
}

/** `n` generated writes. */
function cases(seed, n) {
  const { next, pick } = generator(seed);
  const out = [];
  for (let i = 0; i < n; i++) {
    const roll = next();
    const collection = roll < 0.6 ? "items" : roll < 0.9 ? "notes" : "misc";
    const op = pick(["create", "create", "patch", "put-over"]);
    const fields = {};
    // Often a fitting title and score, so that other rules get their turn.
    if (collection === "items" && next() < 0.6) Object.assign(fields, { title: "ok", score: 1 });
    if (collection === "notes" && next() < 0.5) fields.pinned = true;
    const count = Math.floor(next() * 4);
    for (let k = 0; k < count; k++) fields[pick(FIELDS[collection])] = pick(VALUES);
    out.push({ n: i, collection, op, fields });
  }
  return out;
}

/**
 * A verdict in comparable form: `ok`, the rule and field refused, or
 * `invalid` for a write that is no change at all (no fields).
 */
function serverVerdict(status, body) {
  if (status === 200) return "ok";
  if (status === 422 && body?.error?.code === "invalid_change") {
    const details = body.error.details;
    return details?.rule ? `${details.rule}:${details.field ?? ""}` : "invalid";
  }
  return `http ${status} ${JSON.stringify(body)}`;
}

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launch();
  const dir = await mkdtemp(join(tmpdir(), "ferry-agreement-"));
  try {
    const file = join(dir, "schema.json");
    await writeFile(file, JSON.stringify(SCHEMA));
    assert.match(server.ferry("schema", "apply", file, "--force"), /Applied schema version 1/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("the browser (wasm) and the server (native) judge every generated write alike", async () => {
  const seed = Number(process.env.FERRY_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const context = await browser.newContext();
  try {
    const page = await openDemo(context, server);
    await signIn(page, server, "agree@example.com");
    await eventually(async () => {
      await page.evaluate(() => window.ferry.sync());
      assert.equal(await page.evaluate(async () => (await window.ferry.appSchema()).version), 1);
    }, "the schema in the replica");
    const { accessToken } = await session(page);
    const space = await page.evaluate(() => window.ferry.personalSpace());
    const rest = async (method, collection, id, fields) => {
      const url = `${server.url}/v1/spaces/${encodeURIComponent(space)}/collections/${collection}/records/${id}`;
      const res = await fetch(url, {
        method,
        headers: { authorization: `Bearer ${accessToken}`, "content-type": "application/json" },
        body: JSON.stringify({ fields }),
      });
      return serverVerdict(res.status, await res.json().catch(() => null));
    };

    const generated = cases(seed, 300);
    // The records patched or put over, written alike on both sides first.
    const bases = generated.filter((c) => c.op !== "create" && c.collection !== "misc");
    for (const c of bases) {
      assert.equal(await rest("PUT", c.collection, `c${c.n}-s`, BASE[c.collection]), "ok");
    }
    await page.evaluate(
      async ({ space, bases, BASE }) => {
        for (const c of bases) await window.ferry.put(space, c.collection, `c${c.n}-l`, BASE[c.collection]);
      },
      { space, bases, BASE },
    );

    const local = await page.evaluate(
      async ({ space, generated }) => {
        const out = [];
        for (const c of generated) {
          const id = `c${c.n}-l`;
          try {
            if (c.op === "patch") await window.ferry.patch(space, c.collection, id, c.fields);
            else await window.ferry.put(space, c.collection, id, c.fields);
            out.push("ok");
          } catch (e) {
            if (e.code === "schema") out.push(`${e.details.rule}:${e.details.field ?? ""}`);
            else out.push(e.code === "invalid" ? "invalid" : `error ${e.code}: ${e.message}`);
          }
        }
        return out;
      },
      { space, generated },
    );
    const disagreements = [];
    const seen = new Set();
    for (const [i, c] of generated.entries()) {
      const method = c.op === "patch" ? "PATCH" : "PUT";
      // Patches of misc records have no base: both sides see a create.
      const verdict = c.op === "patch" && c.collection === "misc" ? await rest("PUT", c.collection, `c${c.n}-s`, c.fields) : await rest(method, c.collection, `c${c.n}-s`, c.fields);
      seen.add(verdict === "ok" ? "ok" : verdict.split(":")[0]);
      if (verdict !== local[i]) disagreements.push({ ...c, browser: local[i], server: verdict });
    }
    assert.deepEqual(disagreements, [], `seed ${seed}: the browser and the server disagree`);
    // The generator reached both verdicts and many rules.
    for (const rule of ["ok", "type", "required", "undeclared_field", "undeclared_collection"]) {
      assert.ok(seen.has(rule), `seed ${seed}: no case came out as ${rule} (${[...seen]})`);
    }
    assert.ok(seen.size >= 8, `seed ${seed}: only ${[...seen]} came out`);

    // What the page took, its outbox carries to the server, which takes it.
    await waitForStatus(page, "idle", 0);
    const rejected = await page.evaluate(() => window.ferry.rejected());
    assert.deepEqual(rejected, [], `seed ${seed}: the server refused writes the page took`);
  } finally {
    await context.close();
  }
});
