// A Triplit server on 127.0.0.1:0 with its SQLite storage in
// LOCAL_DATABASE_URL; prints `{"port": N}` once listening and stops when
// its stdin closes. Used by `ferry-bench peer`.
import { createServer, createTriplitStorageProvider } from '@triplit/server';

const secret = process.env.TRIPLIT_SECRET;
if (!secret || !process.env.LOCAL_DATABASE_URL) {
  console.error('TRIPLIT_SECRET and LOCAL_DATABASE_URL must be set');
  process.exit(2);
}
const storage = await createTriplitStorageProvider('sqlite');
const start = await createServer({ storage, jwtSecret: secret, projectId: 'bench' });
const server = start(0, (info) => console.log(JSON.stringify({ port: info.port })));
process.stdin.resume();
process.stdin.on('end', () => server.close(() => process.exit(0)));
