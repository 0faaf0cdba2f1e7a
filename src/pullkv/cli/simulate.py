"""The ``pullkv simulate`` command: the edge's cache policy over hundreds of real locations.

A thin layer over :mod:`pullkv.simulate`; docs/simulation.md explains the model.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import click

from pullkv.edge.cache import CachePolicy
from pullkv.feed.policy import FeedPolicy
from pullkv.limits import Limits

_ENGINE_CHOICES = ("on", "off")


def _duration(value: str, name: str) -> float:
    from pullkv.simulate.config import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


@click.command()
@click.option(
    "--locations",
    type=click.IntRange(1),
    default=300,
    show_default=True,
    help="Number of locations (real cities by IATA code; docs/simulation.md).",
)
@click.option(
    "--origin",
    "origins",
    multiple=True,
    default=("IAD",),
    show_default=True,
    help="IATA code of an origin; give it twice for two origins.",
)
@click.option(
    "--tiers",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Upper-tier locations; every other location pulls from the nearest.",
)
@click.option(
    "--topology",
    default=None,
    metavar="star:EDGES:RTT",
    help="No geography: EDGES edges at RTT from one origin (e.g. star:3:80ms).",
)
@click.option(
    "--weights",
    type=click.Choice(["region", "uniform"]),
    default="region",
    show_default=True,
    help="How requests are shared among locations.",
)
@click.option(
    "--requests",
    type=click.IntRange(1),
    default=1_000_000,
    show_default=True,
    help="Requests to simulate.",
)
@click.option(
    "--duration",
    default="2h",
    show_default=True,
    help="Simulated time the requests are spread over (e.g. 90m, 6h).",
)
@click.option(
    "--keys", type=click.IntRange(1), default=100_000, show_default=True, help="Distinct keys."
)
@click.option(
    "--zipf",
    type=click.FloatRange(0),
    default=1.0,
    show_default=True,
    help="Zipf exponent of key popularity.",
)
@click.option(
    "--write-fraction",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Share of requests that are writes.",
)
@click.option(
    "--list-fraction",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of requests that list keys.",
)
@click.option(
    "--value-size",
    type=click.IntRange(1),
    default=1024,
    show_default=True,
    help="Median value size in bytes (log-normal around it).",
)
@click.option(
    "--cache-ttl",
    type=click.IntRange(1),
    default=Limits().default_cache_ttl,
    show_default=True,
    help="cacheTtl of every read, seconds.",
)
@click.option(
    "--refresh-interval",
    type=click.FloatRange(0),
    default=CachePolicy().refresh_interval,
    show_default=True,
    help="Age past which a hit is revalidated in the background.",
)
@click.option(
    "--max-stale",
    type=click.FloatRange(0),
    default=CachePolicy().max_stale,
    show_default=True,
    help="Seconds past cacheTtl an entry may be served stale.",
)
@click.option(
    "--cache-size",
    type=click.IntRange(1),
    default=64,
    show_default=True,
    help="Cache per edge, MiB.",
)
@click.option(
    "--invalidation",
    "--feed",
    "invalidation",
    type=click.Choice(_ENGINE_CHOICES),
    default="off",
    show_default=True,
    help="Change feed invalidation.",
)
@click.option(
    "--feed-loss",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Probability a change message is lost on each hop.",
)
@click.option(
    "--feed-heartbeat",
    default=f"{FeedPolicy().heartbeat:g}s",
    show_default=True,
    help="Feed heartbeat interval: a lost change is noticed by the next one, then replayed.",
)
@click.option(
    "--outage",
    default=None,
    metavar="START:DURATION",
    help="The origin is unreachable from START for DURATION (e.g. 1h:2.5h).",
)
@click.option(
    "--outage-kind",
    type=click.Choice(["unreachable", "errors"]),
    default="unreachable",
    show_default=True,
    help="unreachable: requests time out; errors: the origin answers 503 at once.",
)
@click.option(
    "--refill",
    type=click.Choice(["none", "jitter"]),
    default="none",
    show_default=True,
    help="After an outage: refill on demand, or serve stale and refill jittered, batched.",
)
@click.option(
    "--jitter-ms",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Mean extra one-way delay per message, ms (exponential).",
)
@click.option(
    "--loss",
    type=click.FloatRange(0, 0.99),
    default=0.0,
    show_default=True,
    help="Probability a message is lost (retransmitted after a timeout).",
)
@click.option(
    "--trace",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Replay a CSV trace (time,location,op,key,size) instead.",
)
@click.option(
    "--visibility-samples",
    type=click.IntRange(0),
    default=100,
    show_default=True,
    help="Writes whose visibility is probed at every location.",
)
@click.option(
    "--scenario",
    type=click.Choice(["single", "feed", "tiers", "outage", "ttl", "refresh", "headline"]),
    default="single",
    show_default=True,
    help="A set of runs drawn side by side (docs/simulation.md).",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("sim-out"),
    show_default=True,
    help="Folder for summary.json and report.html.",
)
@click.option(
    "--progress/--no-progress",
    default=True,
    show_default=True,
    help="Show a progress bar on stderr.",
)
def simulate(**options: Any) -> None:
    """Simulate pullkv at internet scale: its own cache code over hundreds of real
    locations, in virtual time. Writes summary.json and report.html."""
    from pullkv.simulate.deps import MissingDependency, check_all

    try:
        check_all()
    except MissingDependency as exc:
        raise click.ClickException(str(exc)) from None
    from pullkv.simulate import report
    from pullkv.simulate.progress import bar
    from pullkv.simulate.scenarios import expand, run

    config = _config(options)
    try:
        runs = expand(options["scenario"], config)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scenario") from None
    results = []
    for label, run_config in runs:
        started = time.perf_counter()
        progress = bar(f"simulate {label}") if options["progress"] else None
        try:
            result = run(run_config, progress)
        except (KeyError, ValueError) as exc:
            # A KeyError's str() quotes its message; its argument is the message itself.
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise click.ClickException(str(message)) from None
        elapsed = time.perf_counter() - started
        click.echo(
            f"{label}: {result.requests:,} requests in {elapsed:.1f} s "
            f"({result.requests / max(elapsed, 1e-9):,.0f} simulated requests/s)",
            err=True,
        )
        results.append((label, result))
    summary = report.write(options["out"], results)
    for label, s in summary["runs"].items():
        click.echo(
            f"{label}: hit ratio {s['hit_ratio']}, p50 {s['latency_ms']['all']['p50']} ms, "
            f"p99 {s['latency_ms']['all']['p99']} ms, visibility p99 "
            f"{s['visibility']['p99_s']} s"
        )
    click.echo(f"wrote {options['out'] / 'summary.json'} and {options['out'] / 'report.html'}")


def _config(options: dict[str, Any]) -> Any:
    """The SimConfig the options describe (BadParameter naming a malformed one)."""
    from pullkv.simulate.config import SimConfig, parse_outage, parse_topology
    from pullkv.simulate.workload import WorkloadSpec

    origins = tuple(code.upper() for code in options["origins"])
    if len(origins) > 2:
        raise click.BadParameter("at most two origins", param_hint="--origin")
    topology = None
    if options["topology"]:
        try:
            topology = parse_topology(options["topology"])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--topology") from None
    outage = None
    if options["outage"]:
        try:
            outage = parse_outage(options["outage"])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--outage") from None
    policy = dataclasses.replace(
        CachePolicy(),
        refresh_interval=options["refresh_interval"],
        max_stale=options["max_stale"],
    )
    workload = WorkloadSpec(
        requests=options["requests"],
        duration=_duration(options["duration"], "--duration"),
        keys=options["keys"],
        zipf=options["zipf"],
        write_fraction=options["write_fraction"],
        list_fraction=options["list_fraction"],
        value_size=options["value_size"],
    )
    return SimConfig(
        locations=options["locations"],
        origins=origins,
        tiers=options["tiers"],
        topology=topology,
        weights=options["weights"],
        workload=workload,
        trace=options["trace"],
        cache_ttl=options["cache_ttl"],
        policy=policy,
        capacity=options["cache_size"] * 1024 * 1024,
        feed=options["invalidation"] == "on",
        feed_loss=options["feed_loss"],
        feed_heartbeat=_duration(options["feed_heartbeat"], "--feed-heartbeat"),
        outage=outage,
        outage_kind=options["outage_kind"],
        refill=options["refill"],
        jitter=options["jitter_ms"] / 1000,
        loss=options["loss"],
        visibility_samples=options["visibility_samples"],
        seed=options["seed"],
    )


if __name__ == "__main__":  # pragma: no cover
    simulate(sys.argv[1:])
