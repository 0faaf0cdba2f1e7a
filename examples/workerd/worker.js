// Feature flags from a KV namespace served by pullkv: the Worker code is exactly what it
// would be on Cloudflare.

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (request.method === "PUT") {
      const flags = await request.json();
      await env.FLAGS.put(`flags/${url.pathname.slice(1)}`, JSON.stringify(flags), {
        metadata: { updatedAt: new Date().toISOString() },
      });
      return new Response("saved\n");
    }
    const { value, metadata, cacheStatus } = await env.FLAGS.getWithMetadata(
      `flags/${url.pathname.slice(1) || "default"}`,
      { type: "json", cacheTtl: 60 },
    );
    if (value === null) return new Response("no flags\n", { status: 404 });
    return Response.json({ flags: value, updatedAt: metadata?.updatedAt, cacheStatus });
  },
};
