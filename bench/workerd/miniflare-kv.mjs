// Serve a Worker under Miniflare with Miniflare's own local KV namespace bound as KV, with
// "hot" seeded, on 127.0.0.1:<port>; print "READY <url>" once it answers; stop (disposing of
// Miniflare and its workerd) on SIGTERM or SIGINT. Used by bench/bench_workerd.py.
//
//   node bench/workerd/miniflare-kv.mjs <port> <worker.js> <file holding the value of "hot">
import { readFileSync } from "node:fs";
import { Miniflare } from "miniflare";

const [port, scriptPath, valuePath] = process.argv.slice(2);
const mf = new Miniflare({
  modules: true,
  script: readFileSync(scriptPath, "utf8"),
  compatibilityDate: "2025-01-01",
  kvNamespaces: ["KV"],
  host: "127.0.0.1",
  port: Number(port),
  logRequests: false, // otherwise each request is also posted to this process for a log line
});

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  await mf.dispose();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

const url = await mf.ready;
const kv = await mf.getKVNamespace("KV");
await kv.put("hot", readFileSync(valuePath, "utf8"));
console.log(`READY ${url}`);
