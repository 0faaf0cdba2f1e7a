"""The change feed: every committed write and delete, as records without values, numbered by
a sequence that grows by one per record, relayed from the origins' store down the tiers.

- ``policy``: the settings, as data (heartbeat, silence, polling, retention);
- ``log``: where a node's feed comes from: the store (an origin), or its upstream's feed kept
  in memory (an edge, which relays it to edges below);
- ``stream``: serving the feed to a subscriber (``GET /pullkv/v1/changes``);
- ``subscriber``: an edge following its upstream's feed and invalidating its cache.

It is invalidation, not replication: a change drops the cached version it supersedes, and the
next read fetches as usual. The cache TTL stays the bound when the feed is lost.
"""
