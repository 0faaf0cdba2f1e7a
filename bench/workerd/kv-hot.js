// The benchmarked Worker: every request answers the value of "hot" from the KV binding.
// bench/bench_workerd.py runs it in workerd with the binding served by pullkv, and under
// Miniflare with Miniflare's own local KV (miniflare-kv.mjs).
export default {
  async fetch(request, env) {
    const value = await env.KV.get("hot");
    if (value === null) {
      return new Response("no value under hot\n", { status: 500 });
    }
    return new Response(value);
  },
};
