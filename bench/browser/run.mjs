// The browser client's benchmark: runs bench/browser/page.ts in headless
// Chromium and prints each figure beside its baseline from the same run.
//
//   node bench/browser/run.mjs [--records 10000] [--merges 50000] [--runs 5]
//
// Needs `scripts/build-web` (the page in target/web-bench) and the
// ferry-bench binary (`cargo build --release -p ferry-bench`; set
// FERRY_BENCH to use another build) for the native merge baseline.

import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";

import { ROOT, launch, serveStatic } from "../../tests/browser/helpers.mjs";

const { values } = parseArgs({
  options: {
    records: { type: "string", default: "10000" },
    merges: { type: "string", default: "50000" },
    runs: { type: "string", default: "5" },
    "live-records": { type: "string", default: "10000" },
    "live-writes": { type: "string", default: "200" },
    "live-big": { type: "string", default: "100000" },
  },
});
const options = { records: Number(values.records), merges: Number(values.merges), runs: Number(values.runs) };
const liveOptions = {
  records: Number(values["live-records"]),
  writes: Number(values["live-writes"]),
  big: Number(values["live-big"]),
};

// The same two states on both sides: a local record and a pulled one,
// 4 fields each, every field of the pulled one older except one.
const h = (ms, node) => `${String(ms).padStart(15, "0")}:00000:${node}`;
const state = (ms, node, title) => ({
  fields: {
    title: { value: title, hlc: h(ms, node) },
    done: { value: false, hlc: h(ms, node) },
    priority: { value: 3, hlc: h(ms, node) },
    list: { value: "groceries-7", hlc: h(ms, node) },
  },
  deleted: null,
});
const ours = JSON.stringify(state(1_763_798_400_005, "web-1", "Buy 12 things at the corner shop"));
const theirsState = state(1_763_798_400_001, "server", "Buy 12 things at the shop");
theirsState.fields.note = { value: "remember the list", hlc: h(1_763_798_400_009, "server") };
const theirs = JSON.stringify(theirsState);

const target = process.env.CARGO_TARGET_DIR ?? join(ROOT, "target");
const pageDir = join(target, "web-bench");
if (!existsSync(join(pageDir, "bench.js"))) throw new Error(`${pageDir} is missing: run scripts/build-web first`);
const benchBin = process.env.FERRY_BENCH ?? join(target, "release", "ferry-bench");
if (!existsSync(benchBin)) throw new Error(`${benchBin} is missing: cargo build --release -p ferry-bench`);

const pages = await serveStatic(pageDir);
const url = `${pages.url}/index.html`;

const browser = await launch();
let result;
let live;
try {
  const page = await browser.newPage();
  await page.goto(url);
  await page.waitForFunction(() => typeof window.runBench === "function");
  result = await page.evaluate((o) => window.runBench(o), { ...options, ours, theirs });
  live = await page.evaluate((o) => window.runLiveBench(o), liveOptions);
} finally {
  await browser.close();
  pages.close();
}

const native = JSON.parse(
  execFileSync(benchBin, ["merge", "--json", "--ours", ours, "--theirs", theirs, "--merges", String(options.merges), "--runs", String(options.runs)], {
    encoding: "utf8",
  }),
);

const sorted = (xs) => [...xs].sort((a, b) => a - b);
const mmm = (xs) => {
  const s = sorted(xs);
  return [s[0], s[Math.floor(s.length / 2)], s[s.length - 1]];
};
const fmt = (x, d = 0) => x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
const line = (name, xs, d = 0) => console.log(`${name.padEnd(40)} ${mmm(xs).map((x) => fmt(x, d).padStart(12)).join(" ")}`);
const ratios = (a, b) => a.map((x, i) => x / b[i]);

console.log(`browser client, ${options.records} records, ${options.runs} runs (Chromium ${browser.version()})`);
console.log(`${"records/s".padEnd(40)} ${["min", "median", "max"].map((s) => s.padStart(12)).join(" ")}`);
line("apply pulled pages, new records", result.apply_new);
line("apply pulled pages, merged", result.apply_merge);
line("raw IndexedDB put (baseline)", result.raw_put);
line("ratio new / raw", ratios(result.apply_new, result.raw_put), 2);
line("ratio merged / raw", ratios(result.apply_merge, result.raw_put), 2);
console.log(`${"merges/s".padEnd(40)} ${["min", "median", "max"].map((s) => s.padStart(12)).join(" ")}`);
line("wasm core (JSON in/out)", result.wasm_merge);
line("client path (objects in/out)", result.client_merge);
line("native core (JSON in/out, baseline)", native);
line("ratio wasm / native", ratios(result.wasm_merge, native), 2);

console.log(`live queries, ${liveOptions.records} records, 20 queries open, ${liveOptions.writes} local writes (ms)`);
console.log(`${"".padEnd(40)} ${["p50", "p99"].map((s) => s.padStart(12)).join(" ")}`);
const two = (name, a, b) => console.log(`${name.padEnd(40)} ${[a, b].map((x) => fmt(x, 3).padStart(12)).join(" ")}`);
two("write to every new result (incremental)", live.update_p50, live.update_p99);
two("re-running the 20 queries (baseline)", live.rerun_p50, live.rerun_p99);
two("ratio incremental / re-run", live.update_p50 / live.rerun_p50, live.update_p99 / live.rerun_p99);
console.log(`indexed read: ${live.indexed_rows} of ${liveOptions.big} records (ms, median of 5)`);
two("through the index / full scan (baseline)", live.indexed_p50, live.scanned_p50);
console.log(`${"ratio indexed / scan".padEnd(40)} ${fmt(live.indexed_p50 / live.scanned_p50, 3).padStart(12)}`);
console.log(`${`raw getAll of the same ${live.raw_rows} records`.padEnd(40)} ${fmt(live.raw_p50, 3).padStart(12)}`);
console.log(`${"ratio indexed / raw getAll".padEnd(40)} ${fmt(live.indexed_p50 / live.raw_p50, 3).padStart(12)}`);

const dist = join(ROOT, "examples/todo/dist");
const wasm = await readFile(join(dist, "ferry_wasm_bg.wasm"));
const js = await readFile(join(dist, "app.js"));
const client = await readFile(join(ROOT, "clients/js/dist/ferry.js"));
const kb = (b) => `${fmt(b.length / 1024, 1)} KiB raw, ${fmt(gzipSync(b, { level: 9 }).length / 1024, 1)} KiB gzip`;
console.log("bundle sizes");
console.log(`  wasm core                 ${kb(wasm)}`);
console.log(`  client JS (clients/js)    ${kb(client)}`);
const gz = (b) => gzipSync(b, { level: 9 }).length;
console.log(`  client total (wasm + JS)  ${fmt((gz(wasm) + gz(client)) / 1024, 1)} KiB gzip (each file compressed on its own, as served)`);
console.log(`  todo demo JS (app.js)     ${kb(js)}`);
