// N PouchDB clients, each writing M records (the fields of Ferry's benchmark
// records) one after the other, all clients at once; prints how long the
// writes took and how long until every client held all N×M, as JSON. Each
// client keeps its documents in a local PouchDB of its own (pouchdb-node's
// LevelDB adapter, a directory client-K in --dir), like a Ferry replica, and
// runs PouchDB's live two-way replication with the server's `todos`
// (pouchdb-server.mjs) over the CouchDB replication protocol:
// `sync(remote, { live: true, retry: true })` with PouchDB's default
// settings (batches of 100 changes, at most 10 batches in flight, longpoll
// _changes with a 10 s heartbeat, checkpoints on both sides). What a client
// holds is counted from a live `changes` feed on its local database.
//
// Durability: a `put` resolves once its one LevelDB write batch (leveldown
// 6.1.1, LevelDB 1.20; documents pulled by the replication likewise) is
// write(2)n to LevelDB's log with `sync: false`, the default, which PouchDB
// never changes, so without fsync: it survives the process being killed,
// not a power cut or an OS crash. Data is only fsynced when a full 4 MB
// memtable is written out as a table file, and by compactions.
//
//   node pouchdb-clients.mjs --port P --clients N --records M --dir D
//
// (`--secret S` is accepted and ignored: the server has no authentication.)
import { join } from 'node:path';
import PouchDB from 'pouchdb-node';
import { args, record } from './workload.mjs';

const { port, n, m, dir } = args('pouchdb-clients.mjs');
const remoteUrl = `http://127.0.0.1:${port}/todos`;

// Once the figures are printed, errors are the shutdown's (a checkpoint
// write meeting a closed database), not the run's.
let closing = false;
function fail(message) {
  if (closing) return;
  console.error(message);
  process.exit(1);
}

let start = Infinity;
const clients = Array.from({ length: n }, (_, k) => {
  const db = new PouchDB(join(dir, `client-${k}`));
  const remote = new PouchDB(remoteUrl);
  const ids = new Set();
  let feed;
  const held = new Promise((resolve) => {
    feed = db
      .changes({ since: 0, live: true, return_docs: false })
      .on('change', (change) => {
        ids.add(change.id);
        if (ids.size >= n * m) {
          resolve(performance.now() - start);
          feed.cancel();
        }
      })
      .on('error', (err) => fail(`client ${k}'s changes feed failed: ${err}`));
  });
  const sync = db
    .sync(remote, { live: true, retry: true })
    .on('denied', (err) => fail(`client ${k}: a document was denied: ${JSON.stringify(err)}`))
    .on('error', (err) => fail(`client ${k}'s replication failed: ${err}`));
  // Connected: both directions have caught up once and are waiting on changes.
  const connected = Promise.all(
    [sync.push, sync.pull].map(
      (replication) =>
        new Promise((resolve) => {
          const paused = (err) => {
            if (err) return;
            replication.removeListener('paused', paused);
            resolve();
          };
          replication.on('paused', paused);
        }),
    ),
  );
  return { db, remote, ids, feed, held, sync, connected };
});

// Every client replicating and listening before the clock starts, as
// Ferry's and Triplit's clients are in the same benchmark.
const connecting = setTimeout(() => fail(`the clients did not connect to ${remoteUrl}`), 30_000);
await Promise.all(clients.map((c) => c.connected));
clearTimeout(connecting);
await new Promise((resolve) => setTimeout(resolve, 500));
start = performance.now();
const watchdog = setTimeout(
  () => fail(`not every client held all ${n * m} after 120 s: ${clients.map((c) => c.ids.size)}`),
  120_000,
);
await Promise.all(
  clients.map(async ({ db }, k) => {
    for (let j = 0; j < m; j++) {
      const i = k * m + j;
      const { id, fields } = record(i);
      await db.put({ _id: id, ...fields });
    }
  }),
);
const wrote = performance.now() - start;
const all = Math.max(...(await Promise.all(clients.map((c) => c.held))));
clearTimeout(watchdog);
console.log(JSON.stringify({ wrote_ms: wrote, all_ms: all }));

// Stop replicating, let each replication finish what it was writing (at
// most 2 s), close every database, and end.
closing = true;
setTimeout(() => {
  console.error('still closing 5 s after the figures; ending anyway');
  process.exit(0);
}, 5000).unref();
const settled = (emitter) =>
  Promise.race([
    new Promise((resolve) => emitter.on('complete', resolve)),
    new Promise((resolve) => setTimeout(resolve, 2000)),
  ]);
const stopped = clients.map(({ sync }) => settled(sync));
for (const { sync, feed } of clients) {
  sync.cancel();
  feed.cancel();
}
await Promise.all(stopped);
await Promise.allSettled(clients.flatMap(({ db, remote }) => [db.close(), remote.close()]));
process.exit(0);
