// N Triplit clients, each writing M records (the fields of Ferry's
// benchmark records) one after the other, all clients at once; prints how
// long the writes took and how long until every client held all N×M, as
// JSON. Each client keeps its cache and outbox in an SQLite file of its own
// (Triplit's SQLite storage: WAL, synchronous=NORMAL), like a Ferry replica.
//
//   node triplit-clients.mjs --port P --secret S --clients N --records M --dir D
import { createHmac } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { WebSocket } from 'ws';
import { TriplitClient } from '@triplit/client';
import { SQLiteKVStore } from '@triplit/db/storage/sqlite';
import { args, record } from './workload.mjs';

globalThis.WebSocket ??= WebSocket;

const { port, secret, n, m, dir } = args('triplit-clients.mjs');

// A service token of the project, as Triplit's own tooling mints them.
function token(secret) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({
    'x-triplit-token-type': 'secret',
    'x-triplit-project-id': 'bench',
  })}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

const clients = Array.from(
  { length: n },
  (_, k) =>
    new TriplitClient({
      serverUrl: `http://127.0.0.1:${port}`,
      token: token(secret),
      storage: new SQLiteKVStore(new Database(join(dir, `client-${k}.db`))),
      logLevel: 'error',
    }),
);

// Every client subscribed and connected before the clock starts, as
// Ferry's clients are in the same benchmark.
let start = Infinity;
const held = clients.map(
  (client) =>
    new Promise((resolve) => {
      client.subscribe(client.query('todos'), (rows) => {
        if (rows.length >= n * m) resolve(performance.now() - start);
      });
    }),
);
await Promise.all(
  clients.map(
    (client) =>
      new Promise((resolve) => {
        client.onConnectionStatusChange((status) => {
          if (status === 'OPEN') resolve();
        }, true);
      }),
  ),
);
await new Promise((resolve) => setTimeout(resolve, 500));
start = performance.now();
await Promise.all(
  clients.map(async (client, k) => {
    for (let j = 0; j < m; j++) {
      const i = k * m + j;
      const { id, fields } = record(i);
      await client.insert('todos', { id, ...fields });
    }
  }),
);
const wrote = performance.now() - start;
const all = Math.max(...(await Promise.all(held)));
console.log(JSON.stringify({ wrote_ms: wrote, all_ms: all }));
process.exit(0);
