// What every peer's clients script shares with `ferry-bench peer`
// (bench/src/peer_engine.rs): its command line, and the records each
// client writes, the same fields as Ferry's benchmark records, so that
// every engine carries the same data.
//
//   node <peer>-clients.mjs --port P --secret S --clients N --records M --dir D
import { parseArgs } from 'node:util';

/// The command line: `{ port, secret, n, m, dir }`; exits with a usage
/// line when it is incomplete.
export function args(script) {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      secret: { type: 'string' },
      clients: { type: 'string', default: '4' },
      records: { type: 'string', default: '2500' },
      dir: { type: 'string' },
    },
  });
  const n = Number(values.clients);
  const m = Number(values.records);
  if (!values.port || !values.dir || !(n > 0) || !(m > 0)) {
    console.error(`usage: ${script} --port P [--secret S] --clients N --records M --dir D`);
    process.exit(2);
  }
  return { port: values.port, secret: values.secret, n, m, dir: values.dir };
}

/// Record `i`: its id and fields.
export function record(i) {
  return {
    id: `todo-${String(i).padStart(8, '0')}`,
    fields: {
      title: `Buy ${i} things at the corner shop`,
      done: i % 3 === 0,
      priority: i % 5,
      list: `groceries-${i % 17}`,
    },
  };
}
