// Bundles the browser client and the todo demo with esbuild. Run by
// scripts/build-web after wasm-bindgen has generated clients/js/wasm/.
//
//   clients/js/dist/   the client as one ES module, with the wasm core beside it
//   examples/todo/dist/  the demo, as `ferry serve` embeds it
//   target/web-bench/  the browser benchmark page (bench/browser)

import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const wasm = join(root, "clients/js/wasm/ferry_wasm_bg.wasm");

async function bundle(entry, outdir, name, extra = [], external = []) {
  await mkdir(outdir, { recursive: true });
  await build({
    entryPoints: [join(root, entry)],
    outfile: join(outdir, name),
    bundle: true,
    external,
    jsx: "automatic",
    define: { "process.env.NODE_ENV": '"production"' },
    format: "esm",
    target: "es2022",
    minify: true,
    legalComments: "none",
    logLevel: "warning",
  });
  await copyFile(wasm, join(outdir, "ferry_wasm_bg.wasm"));
  for (const file of extra) await copyFile(join(root, file), join(outdir, file.split("/").pop()));
}

await bundle("clients/js/src/index.ts", join(root, "clients/js/dist"), "ferry.js");
// The framework bindings: each imports only types from the client, and its
// framework is the app's (a peer dependency).
for (const [name, framework] of [["react", ["react"]], ["svelte", ["svelte", "svelte/*"]], ["solid", ["solid-js"]]]) {
  await bundle(`clients/js/src/${name}.ts`, join(root, "clients/js/dist"), `${name}.js`, [], framework);
}
await bundle("examples/todo/src/app.ts", join(root, "examples/todo/dist"), "app.js", [
  "examples/todo/src/index.html",
  "examples/todo/src/style.css",
  "examples/todo/src/favicon.ico",
]);
// The same demo in React (`useQuery`), served at /react.
await bundle("examples/todo/src/react/app.tsx", join(root, "examples/todo/dist"), "react.js");
await copyFile(join(root, "examples/todo/src/react/index.html"), join(root, "examples/todo/dist/react.html"));
await bundle("bench/browser/page.ts", join(root, "target/web-bench"), "bench.js", ["bench/browser/index.html"]);

// The demo's files with their sizes, for a quick look after a build.
const files = ["index.html", "style.css", "favicon.ico", "app.js", "ferry_wasm_bg.wasm"];
const sizes = await Promise.all(files.map(async (f) => [f, (await readFile(join(root, "examples/todo/dist", f))).length]));
await writeFile(join(root, "target/web-bench/sizes.json"), JSON.stringify(Object.fromEntries(sizes)));
console.log(sizes.map(([f, n]) => `${f} ${(n / 1024).toFixed(1)} KiB`).join(", "));
