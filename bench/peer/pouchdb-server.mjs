// A PouchDB server on 127.0.0.1:0: express-pouchdb (the CouchDB HTTP API
// and replication protocol) over pouchdb-node's LevelDB adapter, with one
// database, `todos`, created before the server reports. Its LevelDB
// directories are in POUCHDB_DATA_DIR (created if missing). Prints
// `{"port": N}` once `todos` exists and stops when its stdin closes. Used by
// `ferry-bench peer`.
//
// No authentication: express-pouchdb runs in its 'minimumForPouchDB' mode,
// the routes PouchDB's replication needs and nothing else (no _users,
// _session, _config or _security, no log or config file), so every request
// acts as an admin. Nothing is logged.
//
// Durability: each write the server acknowledges (a replicated _bulk_docs
// batch, a document, a replication checkpoint) is one LevelDB write batch
// (leveldown 6.1.1, LevelDB 1.20) with `sync: false`; PouchDB's LevelDB
// adapter never asks for a sync, and that is leveldown's default. LevelDB
// appends the batch to its log and write(2)s it to the kernel (fwrite and
// fflush) before the write completes, without fsync: an acknowledged write
// survives the server process being killed, not a power cut or an OS crash
// (the log's unsynced tail is lost; LevelDB reopens at an earlier,
// consistent state). Data is only fsynced when a full 4 MB memtable is
// written out as a table file, and by compactions. CouchDB fsyncs before it
// acknowledges; express-pouchdb's `_ensure_full_commit` is a no-op.
import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';
import PouchDB from 'pouchdb-node';
import expressPouchDB from 'express-pouchdb';

const dir = process.env.POUCHDB_DATA_DIR;
if (!dir) {
  console.error('POUCHDB_DATA_DIR must be set');
  process.exit(2);
}
mkdirSync(dir, { recursive: true });
const Pouch = PouchDB.defaults({ prefix: `${resolve(dir)}/` });
const app = expressPouchDB(Pouch, { mode: 'minimumForPouchDB' });
const server = app.listen(0, '127.0.0.1', async () => {
  const { port } = server.address();
  // Through the HTTP API, as a CouchDB admin would create it (express-pouchdb
  // keeps its own list of databases).
  const res = await fetch(`http://127.0.0.1:${port}/todos`, { method: 'PUT' });
  if (res.status !== 201) {
    console.error(`cannot create todos: ${res.status} ${await res.text()}`);
    process.exit(1);
  }
  console.log(JSON.stringify({ port }));
});
process.stdin.resume();
process.stdin.on('end', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
