"""What a run leaves behind: ``summary.json`` (the figures) and ``report.html`` (the plots).

The summary depends only on the runs' results, never on the wall clock, so a seed gives the
same file byte for byte. The report embeds its matplotlib PNGs as data URIs: one file to
open, mail or attach.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pullkv.simulate import stats
from pullkv.simulate.deps import require
from pullkv.simulate.engine import FAILED, HIT, OUTCOMES, STALE, TIER, Result

Runs = Sequence[tuple[str, Result]]


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def _share(part: int, whole: int) -> float | None:
    return _r(part / whole) if whole else None


def _vis_summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "p50_s": None, "p99_s": None, "max_s": None}
    ordered = sorted(values)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * p / 100 + 0.5) - 1))]

    return {
        "count": len(ordered),
        "p50_s": _r(at(50), 3),
        "p99_s": _r(at(99), 3),
        "max_s": _r(ordered[-1], 3),
    }


def summarise_run(result: Result) -> dict[str, Any]:
    """One run's figures (see docs/simulation.md for what each means)."""
    config = result.config
    totals = [sum(c[i] for c in result.counts) for i in range(len(OUTCOMES))]
    reads = sum(totals)
    served = reads - totals[FAILED]
    regions: dict[str, list[int]] = {}
    for place, counts in zip(result.locations, result.counts, strict=True):
        acc = regions.setdefault(place.region, [0] * len(OUTCOMES))
        for i, c in enumerate(counts):
            acc[i] += c
    region_hist: dict[str, list[list[int]]] = {}
    for place, h in zip(result.locations, result.hist, strict=True):
        region_hist.setdefault(place.region, []).append(h)
    locations = []
    for i, place in enumerate(result.locations):
        n = sum(result.counts[i])
        p50 = stats.percentile(result.hist[i], 50)
        locations.append(
            {
                "code": place.code,
                "region": place.region,
                "lat": place.lat,
                "lon": place.lon,
                "tier": i in result.tiers,
                "reads": n,
                "hit_ratio": _share(result.counts[i][HIT], n),
                "p50_ms": None if p50 is None else _r(p50 * 1000, 2),
            }
        )
    summary: dict[str, Any] = {
        "requests": result.requests,
        "reads": reads,
        "outcomes": dict(zip(OUTCOMES, totals, strict=True)),
        "hit_ratio": _share(totals[HIT], reads),
        "tier_share": _share(totals[TIER], reads),
        "without_origin": _share(totals[HIT] + totals[TIER] + totals[STALE], reads),
        "served": _share(served, reads),
        "regions": {
            name: {"reads": sum(c), "hit_ratio": _share(c[HIT], sum(c))}
            for name, c in sorted(regions.items())
        },
        "latency_ms": {
            "all": stats.summary(stats.merge(result.hist)),
            "hot": stats.summary(result.hot_hist),
            "cold": stats.summary(result.cold_hist),
            "regions": {
                name: stats.summary(stats.merge(hs)) for name, hs in sorted(region_hist.items())
            },
        },
        "visibility": {**_vis_summary(result.visibility), "censored": result.visibility_censored},
        "writes": {
            "committed": result.writes,
            "failed": result.writes_failed,
            "latency_ms": stats.summary(result.write_hist),
        },
        "lists": dict(zip(OUTCOMES, result.lists, strict=True)),
        "origin": {
            "requests": result.origin_requests,
            "keys": result.origin_keys,
            "peak_per_s": _r(max(result.series["origin_requests"]) / result.series_width, 2),
            "mean_per_s": _r(result.origin_requests / max(result.sim_time, 1e-9), 2),
        },
        "invariants": {
            "max_hit_age_s": _r(result.max_hit_age, 3),
            "max_stale_age_s": _r(result.max_stale_age, 3),
            "stale_bound_s": config.cache_ttl + config.policy.max_stale,
        },
        "tiers": [result.locations[i].code for i in result.tiers],
        "locations": locations,
        "series": {"width_s": _r(result.series_width, 3), **result.series},
    }
    if result.outage is not None:
        summary["outage"] = _outage(result)
    return summary


def _outage(result: Result) -> dict[str, Any]:
    start, length = result.outage or (0.0, 0.0)
    width = result.series_width
    first, last = int(start / width), int((start + length) / width)
    s = result.series
    during = {k: sum(s[k][first:last]) for k in ("fresh", "stale", "failed")}
    total = sum(during.values())
    before = s["origin_requests"][:first]
    after = s["origin_requests"][last : last + max(1, int(600 / width))]
    baseline = sum(before) / len(before) / width if before else None
    return {
        "start_s": start,
        "duration_s": length,
        "reads": total,
        "fresh": _share(during["fresh"], total),
        "stale": _share(during["stale"], total),
        "failed": _share(during["failed"], total),
        "served": _share(during["fresh"] + during["stale"], total),
        "origin_baseline_per_s": _r(baseline, 2),
        "origin_peak_after_per_s": _r(max(after) / width, 2) if after else None,
    }


def summarise(runs: Runs) -> dict[str, Any]:
    """Every run's figures, by label, with the config each ran with."""
    return {
        "runs": {
            label: {"config": _config(result), **summarise_run(result)} for label, result in runs
        }
    }


def _config(result: Result) -> dict[str, Any]:
    import dataclasses

    raw = dataclasses.asdict(result.config)
    return json.loads(json.dumps(raw, default=str))  # type: ignore[no-any-return]


def write(out: Path, runs: Runs) -> dict[str, Any]:
    """Write summary.json and report.html into ``out``; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    (out / "report.html").write_text(render_html(summary, runs))
    return summary


# Plots.
def _figure_png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    require("matplotlib.pyplot").close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _plots(summary: dict[str, Any], runs: Runs) -> list[tuple[str, str]]:
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot")
    figures: list[tuple[str, str]] = []
    labels = [label for label, _ in runs]
    sums = [summary["runs"][label] for label in labels]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    bottom = [0.0] * len(labels)
    for outcome in OUTCOMES:
        shares = [(s["outcomes"][outcome] / s["reads"]) if s["reads"] else 0 for s in sums]
        ax1.bar(labels, shares, bottom=bottom, label=f"answered: {outcome}")
        bottom = [b + v for b, v in zip(bottom, shares, strict=True)]
    ax1.set_ylabel("share of reads")
    ax1.set_title("Where reads were answered (edge = hit ratio)")
    ax1.legend(fontsize=7)
    ax1.tick_params(axis="x", labelrotation=20, labelsize=7)
    regions = sorted({r for s in sums for r in s["regions"]})
    width = 0.8 / max(1, len(labels))
    for j, (label, s) in enumerate(zip(labels, sums, strict=True)):
        xs = [i + j * width for i in range(len(regions))]
        ys = [(s["regions"].get(r) or {}).get("hit_ratio") or 0 for r in regions]
        ax2.bar(xs, ys, width=width, label=label)
    ax2.set_xticks([i + 0.4 - width / 2 for i in range(len(regions))], regions, fontsize=7)
    ax2.tick_params(axis="x", labelrotation=20)
    ax2.set_title("Hit ratio at the edge, by region")
    ax2.legend(fontsize=7)
    figures.append(("Hit ratio per tier and per region", _figure_png(fig)))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    for label, result in runs:
        for name, h, style in (("hot", result.hot_hist, "-"), ("cold", result.cold_hist, "--")):
            xs, ys = stats.cdf(h)
            ax1.plot([x * 1000 for x in xs], ys, style, label=f"{label}: {name}")
    ax1.set_xscale("log")
    ax1.set_xlabel("read latency (ms)")
    ax1.set_title("Read latency CDF: hot (top 1 % of keys) and cold keys")
    ax1.legend(fontsize=7)
    first_label, first = runs[0]
    by_region: dict[str, list[list[int]]] = {}
    for place, h in zip(first.locations, first.hist, strict=True):
        by_region.setdefault(place.region, []).append(h)
    for region, hs in sorted(by_region.items()):
        xs, ys = stats.cdf(stats.merge(hs))
        ax2.plot([x * 1000 for x in xs], ys, label=region)
    ax2.set_xscale("log")
    ax2.set_xlabel("read latency (ms)")
    ax2.set_title(f"Read latency CDF by continent ({first_label})")
    ax2.legend(fontsize=7)
    figures.append(("Read latency", _figure_png(fig)))

    fig, ax = plt.subplots(figsize=(12, 4))
    for label, result in runs:
        if result.visibility:
            ordered = sorted(result.visibility)
            n = len(ordered)
            ax.plot(ordered, [(i + 1) / n for i in range(n)], label=label)
    ax.set_xlabel("write-to-visible latency at each location (s)")
    ax.set_ylabel("share of (write, location) pairs")
    ax.set_title("Write-to-visible latency: TTL only against the change feed")
    ax.legend(fontsize=7)
    figures.append(("Write-to-visible latency", _figure_png(fig)))

    fig, ax = plt.subplots(figsize=(12, 4))
    for label, result in runs:
        w = result.series_width
        ys = [c / w for c in result.series["origin_requests"]]
        ax.plot([i * w / 3600 for i in range(len(ys))], ys, label=label)
        if result.outage is not None:
            start, length = result.outage
            ax.axvspan(start / 3600, (start + length) / 3600, color="grey", alpha=0.1)
    ax.set_xlabel("simulated time (h)")
    ax.set_ylabel("origin requests per second")
    ax.set_title("Origin load over time (outage shaded)")
    ax.legend(fontsize=7)
    figures.append(("Origin load", _figure_png(fig)))

    outages = [(label, r) for label, r in runs if r.outage is not None]
    if outages:
        fig, axes = plt.subplots(1, len(outages), figsize=(6 * len(outages), 4), squeeze=False)
        for ax, (label, result) in zip(axes[0], outages, strict=True):
            w = result.series_width
            hours = [i * w / 3600 for i in range(len(result.series["fresh"]))]
            for name in ("fresh", "stale", "failed"):
                ax.plot(hours, [c / w for c in result.series[name]], label=name)
            start, length = result.outage or (0.0, 0.0)
            ax.axvspan(start / 3600, (start + length) / 3600, color="grey", alpha=0.1)
            ax.set_xlabel("simulated time (h)")
            ax.set_ylabel("reads per second")
            ax.set_title(f"During the outage: {label}", fontsize=9)
            ax.legend(fontsize=7)
        figures.append(("Origin outage: fresh, stale and failed reads", _figure_png(fig)))

    fig, ax = plt.subplots(figsize=(12, 5.5))
    places = summary["runs"][first_label]["locations"]
    xs = [p["lon"] for p in places]
    ys = [p["lat"] for p in places]
    colours = [p["hit_ratio"] or 0.0 for p in places]
    points = ax.scatter(xs, ys, c=colours, cmap="viridis", s=18, vmin=0, vmax=1)
    tiers = [p for p in places if p["tier"]]
    ax.scatter(
        [p["lon"] for p in tiers],
        [p["lat"] for p in tiers],
        marker="^",
        s=60,
        facecolors="none",
        edgecolors="red",
        label="upper tier",
    )
    fig.colorbar(points, ax=ax, label="hit ratio at the edge")
    ax.set_xlim(-180, 180)
    ax.set_ylim(-60, 75)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(f"Locations by hit ratio ({first_label})")
    if tiers:
        ax.legend(fontsize=7)
    figures.append(("Map of locations", _figure_png(fig)))
    return figures


def _headline_rows(summary: dict[str, Any]) -> str:
    rows = []
    for label, s in summary["runs"].items():
        outage = s.get("outage") or {}
        cells = [
            label,
            s["hit_ratio"],
            s["tier_share"],
            s["latency_ms"]["all"]["p50"],
            s["latency_ms"]["all"]["p99"],
            s["latency_ms"]["hot"]["p99"],
            s["visibility"]["p99_s"],
            outage.get("served", "-"),
            s["origin"]["peak_per_s"],
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return "\n".join(rows)


def render_html(summary: dict[str, Any], runs: Runs) -> str:
    """The report page: a table of headline figures and every plot, embedded."""
    sections = "\n".join(
        f'<h2>{html.escape(title)}</h2>\n<img alt="{html.escape(title)}" '
        f'src="data:image/png;base64,{png}">'
        for title, png in _plots(summary, runs)
    )
    head = (
        "<tr><th>run</th><th>hit ratio</th><th>answered at a tier</th><th>p50 ms</th>"
        "<th>p99 ms</th><th>hot p99 ms</th><th>visibility p99 s</th>"
        "<th>served during outage</th><th>origin peak req/s</th></tr>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pullkv simulate report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:80em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .5em}}
img{{max-width:100%}}</style></head>
<body><h1>pullkv simulate</h1>
<p>The edge's own cache policy (pullkv.edge.cache) run in simulated time. Figures are in
summary.json beside this page; docs/simulation.md explains the model.</p>
<table>{head}
{_headline_rows(summary)}
</table>
{sections}
</body></html>
"""
