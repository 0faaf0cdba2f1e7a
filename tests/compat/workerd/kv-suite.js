// A Worker whose KV binding is served by pullkv. Each path runs one scenario through the
// binding and answers {ok, result} or {ok: false, error}: the Python test checks the results.

const bytes = (buffer) => Array.from(new Uint8Array(buffer));

async function attempt(fn) {
  try {
    await fn();
    return null;
  } catch (error) {
    return String(error && error.message ? error.message : error);
  }
}

const SCENARIOS = {
  async get_types(kv) {
    await kv.put("text", "héllo wörld");
    await kv.put("json", JSON.stringify({ a: [1, 2], b: "c" }));
    await kv.put("bin", new Uint8Array([0, 1, 2, 127, 128, 254, 255]));
    await kv.put("empty", "");
    const stream = await kv.get("bin", "stream");
    return {
      text: await kv.get("text"),
      textOption: await kv.get("text", { type: "text" }),
      json: await kv.get("json", "json"),
      arrayBuffer: bytes(await kv.get("bin", "arrayBuffer")),
      stream: bytes(await new Response(stream).arrayBuffer()),
      empty: await kv.get("empty"),
      missing: await kv.get("missing"),
      withCacheTtl: await kv.get("text", { cacheTtl: 30 }),
      encodedKey: await (async () => {
        await kv.put("dir/a b?c%d#e:ключ😀", "odd");
        return kv.get("dir/a b?c%d#e:ключ😀");
      })(),
    };
  },

  async with_metadata(kv) {
    await kv.put("meta", "value", { metadata: { testing: true, n: 1 } });
    await kv.put("plain", "v");
    await kv.put("scalar", "s", { metadata: "example" });
    const pick = (r) => ({ value: r.value, metadata: r.metadata, cacheStatus: r.cacheStatus });
    return {
      meta: pick(await kv.getWithMetadata("meta")),
      plain: pick(await kv.getWithMetadata("plain")),
      scalar: pick(await kv.getWithMetadata("scalar")),
      missing: pick(await kv.getWithMetadata("missing")),
      asJson: pick(await kv.getWithMetadata("meta", { type: "text", cacheTtl: 60 })),
      asBuffer: bytes((await kv.getWithMetadata("plain", "arrayBuffer")).value),
    };
  },

  async bulk(kv) {
    await kv.put("k1", "v1");
    await kv.put("k2", JSON.stringify({ x: 1 }), { metadata: { m: 2 } });
    await kv.put("k3", "0");
    const entries = (map) => Object.fromEntries(map);
    return {
      text: entries(await kv.get(["k1", "k2", "nope"])),
      json: entries(await kv.get(["k2", "k3"], "json")),
      textWithMetadata: entries(await kv.getWithMetadata(["k1", "k2", "nope"])),
      jsonWithMetadata: entries(await kv.getWithMetadata(["k2"], { type: "json", cacheTtl: 60 })),
    };
  },

  async put_options(kv) {
    const now = Math.floor(Date.now() / 1000);
    await kv.put("opt/ttl", "x", { expirationTtl: 300 });
    await kv.put("opt/abs", "y", { expiration: now + 600 });
    await kv.put("opt/meta", "z", { metadata: { a: 1 }, expirationTtl: 120 });
    await kv.put("opt/stream", new Response("streamed body").body);
    const listed = await kv.list({ prefix: "opt/" });
    return { now, keys: listed.keys, streamed: await kv.get("opt/stream") };
  },

  async delete(kv) {
    await kv.put("gone", "x");
    const before = await kv.get("gone");
    await kv.delete("gone");
    await kv.delete("never-existed");
    return { before, after: await kv.get("gone") };
  },

  async list_paging(kv) {
    for (let i = 0; i < 25; i++) {
      await kv.put(`page/${String(i).padStart(2, "0")}`, "v", { metadata: { i } });
    }
    await kv.put("other", "v");
    const names = [];
    const pages = [];
    let cursor;
    for (;;) {
      const page = await kv.list({ prefix: "page/", limit: 10, cursor });
      names.push(...page.keys.map((k) => k.name));
      pages.push({ count: page.keys.length, complete: page.list_complete, hasCursor: "cursor" in page });
      if (page.list_complete) break;
      cursor = page.cursor;
    }
    const first = await kv.list({ prefix: "page/", limit: 1 });
    const all = await kv.list();
    return { names, pages, firstKey: first.keys[0], total: all.keys.length, cacheStatus: all.cacheStatus };
  },

  async limit_errors(kv) {
    return {
      keyTooLong: await attempt(() => kv.get("k".repeat(513))),
      valueTooLarge: await attempt(() => kv.put("big", new Uint8Array(25 * 1024 * 1024 + 1))),
      metadataTooLarge: await attempt(() => kv.put("m", "v", { metadata: { x: "y".repeat(1100) } })),
      expirationTtlUnderFloor: await attempt(() => kv.put("t", "v", { expirationTtl: 30 })),
      expirationTooSoon: await attempt(() =>
        kv.put("t", "v", { expiration: Math.floor(Date.now() / 1000) + 30 }),
      ),
      cacheTtlUnderFloor: await attempt(() => kv.get("k", { cacheTtl: 10 })),
      bulkCacheTtlUnderFloor: await attempt(() => kv.get(["k"], { cacheTtl: 10 })),
      bulkTooMany: await attempt(() => kv.get(Array.from({ length: 101 }, (_, i) => `k${i}`))),
      listLimitTooHigh: await attempt(() => kv.list({ limit: 1001 })),
      nothingWritten: await kv.get("big"),
    };
  },

  async hot(kv) {
    return kv.get("hot");
  },

  // Freshness across locations: the binding's edge reads "flag" as a Worker would.
  async flag(kv) {
    return { value: await kv.get("flag") };
  },
};

export default {
  async fetch(request, env) {
    const name = new URL(request.url).pathname.slice(1);
    const scenario = SCENARIOS[name];
    if (!scenario) return new Response("no such scenario", { status: 404 });
    if (name === "hot") return new Response(await scenario(env.KV));
    try {
      return Response.json({ ok: true, result: await scenario(env.KV) });
    } catch (error) {
      return Response.json({ ok: false, error: String(error && error.stack ? error.stack : error) });
    }
  },
};
