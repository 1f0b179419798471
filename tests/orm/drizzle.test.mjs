// A mirrored table driven by Drizzle ORM over node-postgres, as an app's
// backend drives its own tables (docs/tables.md): two `ferry serve` nodes
// on one PostgreSQL database, a device writing through one of them, the
// backend reading what the device wrote and writing (insert, update,
// soft delete, hard delete) what the device then receives from the other.
// PostgreSQL must be reachable (FERRY_TEST_POSTGRES, by default
// postgres://postgres@127.0.0.1:5432/postgres); nothing is skipped.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { and, eq, isNull } from "drizzle-orm";
import { drizzle } from "drizzle-orm/node-postgres";
import { boolean, pgTable, primaryKey, text, timestamp } from "drizzle-orm/pg-core";
import pg from "pg";

import { eventually } from "../browser/helpers.mjs";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = process.env.FERRY_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(ROOT, "target"), "debug", "ferry");
const ADMIN = process.env.FERRY_TEST_POSTGRES ?? "postgres://postgres@127.0.0.1:5432/postgres";

/** The notes app's model, as its schema file declares it. */
const SCHEMA = `
[collections.notes]
mode = "strict"
table = "notes"
space_column = "workspace_id"

[collections.notes.fields]
title  = { type = "string", required = true, max_length = 200 }
body   = { type = "string" }
pinned = { type = "boolean" }
`;

/** The same table, as the app's Drizzle schema declares it. */
const notes = pgTable(
  "notes",
  {
    workspaceId: text("workspace_id").notNull(),
    id: text("id").notNull(),
    title: text("title"),
    body: text("body"),
    pinned: boolean("pinned"),
    deletedAt: timestamp("deleted_at", { withTimezone: true }),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.workspaceId, t.id] })],
);

/** `url` with its database replaced by `name`. */
function withDatabase(url, name) {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/** `ferry serve` on 127.0.0.1:0 over `database`; resolves to its URL. */
async function serve(database, schemaFile, children) {
  const child = spawn(BIN, ["serve", "--listen", "127.0.0.1:0", "--database", database, "--schema", schemaFile], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  children.push(child);
  return new Promise((resolve, reject) => {
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
}

const children = [];
const name = `ferry_drizzle_${process.pid}_${Date.now()}`;
let admin;
let pool;
let db;
let nodes;
let token;
let space;

before(async () => {
  assert.ok(existsSync(BIN), `the ferry binary is missing at ${BIN}: build it with cargo build -p ferry-cli`);
  admin = new pg.Client({ connectionString: ADMIN });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const url = withDatabase(ADMIN, name);
  const dir = await mkdtemp(join(tmpdir(), "ferry-drizzle-"));
  const schemaFile = join(dir, "ferry.schema.toml");
  await writeFile(schemaFile, SCHEMA);
  // The first node applies the schema (and makes the table); the second
  // finds it applied.
  const first = await serve(url, schemaFile, children);
  const second = await serve(url, schemaFile, children);
  nodes = [first, second];
  token = execFileSync(BIN, ["admin", "token", "--email", "ada@example.com", "--database", url], { encoding: "utf8" }).trim();
  const me = await call(first, "GET", "/v1/me");
  space = `user:${me.user.id}`;
  pool = new pg.Pool({ connectionString: url, max: 2 });
  // An idle connection ended by the server (the drop at the end) is not
  // the test's failure; a query's error still is.
  pool.on("error", () => {});
  db = drizzle(pool);
});

after(async () => {
  // The nodes first (each gone before the database is dropped), then the
  // backend's pool; the drop ends whatever connection is left.
  await Promise.all(
    children.map(
      (child) =>
        new Promise((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once("exit", resolve);
          child.kill("SIGTERM");
        }),
    ),
  );
  await pool?.end();
  if (admin) {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
});

async function call(node, method, path, body) {
  const res = await fetch(`${node}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** The device's view of note `id` through `node`: its fields, or "deleted". */
async function onDevice(node, id) {
  const page = await call(node, "GET", `/v1/spaces/${encodeURIComponent(space)}/changes?cursor=0&limit=1000`);
  const found = page.changes.find((r) => r.collection === "notes" && r.id === id);
  if (!found) return undefined;
  if (found.deleted) return "deleted";
  return Object.fromEntries(Object.entries(found.fields).map(([k, v]) => [k, v.value]));
}

test("the backend reads with Drizzle what a device wrote, and writes what devices receive", async () => {
  const [first, second] = nodes;
  const path = (id) => `/v1/spaces/${encodeURIComponent(space)}/collections/notes/records/${id}`;

  // A device writes; the backend's select sees it at once (same commit).
  await call(first, "PUT", path("n1"), { fields: { title: "From the phone", pinned: true } });
  const rows = await db.select().from(notes).where(and(eq(notes.workspaceId, space), eq(notes.id, "n1")));
  assert.equal(rows.length, 1);
  assert.equal(rows[0].title, "From the phone");
  assert.equal(rows[0].pinned, true);
  assert.equal(rows[0].deletedAt, null);

  // The backend inserts; the device receives it through the other node.
  await db.insert(notes).values({ workspaceId: space, id: "n2", title: "From the backend", body: "Drizzle" });
  const n2 = await eventually(async () => {
    const seen = await onDevice(second, "n2");
    assert.ok(seen && seen !== "deleted", "not yet");
    return seen;
  }, "the backend's insert on the device");
  assert.deepEqual(n2, { title: "From the backend", body: "Drizzle" });

  // An update of one column carries that field alone.
  await db.update(notes).set({ pinned: false }).where(and(eq(notes.workspaceId, space), eq(notes.id, "n1")));
  await eventually(async () => {
    assert.equal((await onDevice(second, "n1"))?.pinned, false);
  }, "the backend's update on the device");
  assert.equal((await onDevice(second, "n1")).title, "From the phone");

  // A device's edit after it reaches the backend's next select.
  await call(second, "PATCH", path("n2"), { fields: { title: "Edited on the laptop" } });
  const [edited] = await db.select().from(notes).where(eq(notes.id, "n2"));
  assert.equal(edited.title, "Edited on the laptop");

  // A soft delete and a hard delete are deletes.
  await db.update(notes).set({ deletedAt: new Date() }).where(eq(notes.id, "n1"));
  await db.delete(notes).where(eq(notes.id, "n2"));
  await eventually(async () => {
    assert.equal(await onDevice(second, "n1"), "deleted");
    assert.equal(await onDevice(second, "n2"), "deleted");
  }, "the backend's deletes on the device");
  const live = await db.select().from(notes).where(isNull(notes.deletedAt));
  assert.deepEqual(live, []);

  // What the backend wrote that the schema refuses never reaches a device.
  await db.insert(notes).values({ workspaceId: space, id: "n3", title: "x".repeat(201) });
  const refused = await eventually(async () => {
    const { rows } = await pool.query("SELECT reason FROM ferry.capture_refused WHERE new_row->>'id' = 'n3'");
    assert.equal(rows.length, 1, "not yet");
    return rows[0].reason;
  }, "the refusal of n3");
  assert.match(refused, /200/);
  assert.equal(await onDevice(second, "n3"), undefined);
});
