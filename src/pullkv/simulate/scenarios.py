"""Building a run from its config, and the named sets of runs (``--scenario``).

A scenario is a list of labelled configs derived from the one the options give; the report
draws every run of a scenario on the same axes, so "TTL only" and "change feed" sit side by
side. ``single`` is the options as given.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from pullkv.simulate import locations as loc
from pullkv.simulate.config import SimConfig
from pullkv.simulate.engine import Result, Simulation
from pullkv.simulate.network import Network
from pullkv.simulate.workload import Workload, from_trace, synthetic

SCENARIOS = ("single", "feed", "tiers", "outage", "ttl", "refresh", "headline")


def build(config: SimConfig, progress: Callable[[int, int], None] | None = None) -> Simulation:
    """The nodes, network, upstreams and workload of ``config``, ready to run."""
    net_rng = random.Random(f"network:{config.seed}")
    tiers: list[int] = []
    if config.topology is not None:
        star = config.topology
        places = [
            loc.Location(f"E{i + 1}", f"edge {i + 1}", "-", "star", 0.0, 0.0)
            for i in range(star.edges)
        ]
        network = Network.star(
            star.edges, star.rtt, jitter=config.jitter, loss=config.loss, rng=net_rng
        )
        upstream = [star.edges] * star.edges
        shares = [1.0 / star.edges] * star.edges
    else:
        codes = loc.select_codes(config.locations, config.origins)
        places = [loc.lookup(code) for code in codes]
        origins = [loc.lookup(code) for code in config.origins]
        network = Network.from_locations(
            places + origins, jitter=config.jitter, loss=config.loss, rng=net_rng
        )
        n = len(places)
        origin_nodes = list(range(n, n + len(origins)))
        shares = loc.weights(places, config.weights)
        rtt = network.rtt
        tiers = loc.choose_tiers(config.tiers, n, origin_nodes, lambda a, b: rtt[a][b], shares)
        upstream = []
        for i in range(n):
            nearest_origin = min(origin_nodes, key=lambda o: rtt[i][o])
            if i in tiers or not tiers:
                upstream.append(nearest_origin)
            else:
                # The nearest of the tiers and the origins: a location next to an origin
                # has no reason to go through a tier.
                upstream.append(min([*tiers, *origin_nodes], key=lambda u: rtt[i][u]))
    workload: Workload
    if config.trace is not None:
        workload = from_trace(config.trace, [p.code for p in places])
    else:
        workload = synthetic(config.workload, shares, config.seed)
    return Simulation(config, places, network, upstream, tiers, workload, progress)


def run(config: SimConfig, progress: Callable[[int, int], None] | None = None) -> Result:
    """Build and run one simulation."""
    return build(config, progress).run()


def expand(name: str, base: SimConfig) -> list[tuple[str, SimConfig]]:
    """The labelled runs of scenario ``name`` around ``base`` (module docstring)."""
    replace = dataclasses.replace
    if name == "single":
        return [("run", base)]
    if name == "feed":
        loss = base.feed_loss or 0.1
        return [
            ("TTL only", replace(base, feed=False)),
            ("change feed", replace(base, feed=True, feed_loss=0.0)),
            (f"feed, {loss:.0%} loss", replace(base, feed=True, feed_loss=loss)),
        ]
    if name == "tiers":
        tiers = base.tiers or 16
        return [
            ("no tiers", replace(base, tiers=0)),
            (f"{tiers} tiers", replace(base, tiers=tiers)),
        ]
    if name == "outage":
        outage = base.outage or (base.workload.duration / 4, base.workload.duration / 2)
        return [
            ("refill on demand", replace(base, outage=outage, refill="none")),
            ("jittered, batched refill", replace(base, outage=outage, refill="jitter")),
        ]
    if name == "ttl":
        return [(f"cacheTtl {ttl} s", replace(base, cache_ttl=ttl)) for ttl in (30, 60, 300, 3600)]
    if name == "refresh":
        return [
            (
                f"refresh {r:g} s",
                replace(base, policy=replace(base.policy, refresh_interval=r)),
            )
            for r in (10.0, 30.0, 60.0)
        ]
    if name == "headline":
        tiers = base.tiers or 16
        loss = base.feed_loss or 0.1
        outage = base.outage or (base.workload.duration / 4, 2.5 * 3600)
        calm = replace(base, outage=None, feed=False)
        longer = replace(base.policy, max_stale=max(base.policy.max_stale, 3 * 3600.0))
        return [
            ("no tiers", replace(calm, tiers=0)),
            (f"{tiers} tiers", replace(calm, tiers=tiers)),
            (f"{tiers} tiers, feed", replace(calm, tiers=tiers, feed=True, feed_loss=0.0)),
            (
                f"{tiers} tiers, feed {loss:.0%} loss",
                replace(calm, tiers=tiers, feed=True, feed_loss=loss),
            ),
            (f"{tiers} tiers, outage", replace(calm, tiers=tiers, outage=outage)),
            (
                f"{tiers} tiers, outage, max-stale 3 h, jittered refill",
                replace(calm, tiers=tiers, outage=outage, policy=longer, refill="jitter"),
            ),
        ]
    raise ValueError(f"unknown scenario {name!r}; one of {', '.join(SCENARIOS)}")
