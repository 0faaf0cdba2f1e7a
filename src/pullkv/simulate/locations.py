"""Where the simulated edges are: real cities named by IATA airport codes, as Cloudflare
names its locations, with coordinates from the ``airportsdata`` package.

Selection rule. ``CANDIDATES`` is a fixed list of 349 codes: the main airport of cities
that host a location of one or more of the large CDNs, grouped by region. ``--locations N``
takes N of them by an even stride through each region's list in proportion to the region's
size (the first codes of each region first), so any N keeps the regional mix of the whole
list; the origins are always included.

Regional tiers. ``--tiers N`` picks N upper-tier locations by a greedy p-median rule: start
with none, and repeatedly add the location that most lowers the sum, over all locations
weighted by their request share, of the round-trip time to the nearest upper tier (an origin
counts as one). Every other location's upstream is its nearest tier by round-trip time; a
tier's upstream is its nearest origin. Argo Tiered Cache picks its regional hubs for the same
reason: few hubs, near where the requests are.

The star topology (``star:N:80ms``) has no geography: an origin and N edges, each at the
given round-trip time from it, to compare with a ``pullkv cluster up`` on loopback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pullkv.simulate.deps import airports

# The main airport of cities with a large-CDN location, by region. Kept in this order: the
# stride selection takes each region's first codes first.
CANDIDATES: dict[str, tuple[str, ...]] = {
    "North America": tuple(
        [
            "ATL",
            "BOS",
            "BNA",
            "BUF",
            "BWI",
            "CLT",
            "CMH",
            "CVG",
            "DEN",
            "DFW",
            "DTW",
            "EWR",
            "IAD",
            "IAH",
            "IND",
            "JAX",
            "JFK",
            "LAS",
            "LAX",
            "MCI",
            "MCO",
            "MEM",
            "MIA",
            "MSP",
            "MSY",
            "OKC",
            "OMA",
            "ORD",
            "PDX",
            "PHL",
            "PHX",
            "PIT",
            "RDU",
            "RIC",
            "SAN",
            "SAT",
            "SEA",
            "SFO",
            "SJC",
            "SLC",
            "SMF",
            "STL",
            "TPA",
            "TUL",
            "ABQ",
            "BOI",
            "ANC",
            "HNL",
            "ELP",
            "BIL",
            "FSD",
            "DSM",
            "ICT",
            "LIT",
            "BHM",
            "YYZ",
            "YUL",
            "YVR",
            "YYC",
            "YEG",
            "YWG",
            "YOW",
            "YHZ",
            "MEX",
            "GDL",
            "MTY",
            "QRO",
            "CUN",
            "PTY",
            "SJO",
            "GUA",
            "SAL",
            "TGU",
            "SDQ",
            "SJU",
            "KIN",
            "POS",
            "NAS",
            "MBJ",
            "BGI",
        ]
    ),
    "South America": tuple(
        [
            "GRU",
            "GIG",
            "BSB",
            "CNF",
            "POA",
            "CWB",
            "FOR",
            "REC",
            "SSA",
            "BEL",
            "MAO",
            "FLN",
            "EZE",
            "COR",
            "SCL",
            "LIM",
            "BOG",
            "MDE",
            "CLO",
            "UIO",
            "GYE",
            "CCS",
            "ASU",
            "MVD",
            "LPB",
            "VVI",
        ]
    ),
    "Europe": tuple(
        [
            "LHR",
            "MAN",
            "EDI",
            "BHX",
            "DUB",
            "ORK",
            "CDG",
            "MRS",
            "LYS",
            "NCE",
            "TLS",
            "BOD",
            "FRA",
            "MUC",
            "BER",
            "HAM",
            "DUS",
            "STR",
            "CGN",
            "LEJ",
            "AMS",
            "BRU",
            "LUX",
            "ZRH",
            "GVA",
            "VIE",
            "PRG",
            "WAW",
            "KRK",
            "BUD",
            "BTS",
            "LJU",
            "ZAG",
            "BEG",
            "SOF",
            "OTP",
            "KBP",
            "LWO",
            "RIX",
            "VNO",
            "TLL",
            "HEL",
            "ARN",
            "GOT",
            "CPH",
            "OSL",
            "BGO",
            "SVG",
            "KEF",
            "LIS",
            "OPO",
            "MAD",
            "BCN",
            "AGP",
            "VLC",
            "PMI",
            "FCO",
            "MXP",
            "VCE",
            "NAP",
            "PMO",
            "BLQ",
            "ATH",
            "SKG",
            "LCA",
            "MLA",
            "TIA",
            "SKP",
            "SJJ",
            "TGD",
            "IST",
            "ESB",
            "ADB",
            "DME",
            "LED",
            "SVX",
            "EVN",
            "TBS",
            "GYD",
            "MSQ",
        ]
    ),
    "Africa": tuple(
        [
            "JNB",
            "CPT",
            "DUR",
            "LAD",
            "MPM",
            "HRE",
            "LUN",
            "GBE",
            "WDH",
            "DAR",
            "NBO",
            "MBA",
            "EBB",
            "KGL",
            "ADD",
            "KRT",
            "CAI",
            "ALG",
            "TUN",
            "CMN",
            "RAK",
            "ABJ",
            "ACC",
            "LOS",
            "ABV",
            "DKR",
            "BKO",
            "OUA",
            "COO",
            "LFW",
            "FIH",
            "BZV",
            "DLA",
            "LBV",
            "TNR",
            "MRU",
            "RUN",
            "SEZ",
            "TIP",
            "NKC",
            "FNA",
            "ROB",
            "CKY",
            "JUB",
            "MGQ",
            "BJM",
            "LLW",
        ]
    ),
    "Middle East": tuple(
        [
            "DXB",
            "AUH",
            "DOH",
            "BAH",
            "KWI",
            "MCT",
            "RUH",
            "JED",
            "DMM",
            "AMM",
            "BEY",
            "TLV",
            "BGW",
            "BSR",
            "EBL",
            "IKA",
            "MHD",
        ]
    ),
    "Asia": tuple(
        [
            "DEL",
            "BOM",
            "BLR",
            "MAA",
            "HYD",
            "CCU",
            "AMD",
            "PNQ",
            "COK",
            "NAG",
            "JAI",
            "LKO",
            "PAT",
            "GAU",
            "BBI",
            "IXC",
            "TRV",
            "CMB",
            "MLE",
            "KTM",
            "DAC",
            "CGP",
            "KHI",
            "LHE",
            "ISB",
            "NRT",
            "HND",
            "KIX",
            "NGO",
            "FUK",
            "CTS",
            "OKA",
            "ICN",
            "PUS",
            "TPE",
            "KHH",
            "HKG",
            "MFM",
            "PEK",
            "PVG",
            "CAN",
            "SZX",
            "CTU",
            "CKG",
            "XIY",
            "WUH",
            "HGH",
            "NKG",
            "TSN",
            "SHE",
            "DLC",
            "TAO",
            "XMN",
            "KMG",
            "CSX",
            "ULN",
            "SIN",
            "KUL",
            "PEN",
            "JHB",
            "BKK",
            "CNX",
            "HKT",
            "SGN",
            "HAN",
            "DAD",
            "KTI",
            "RGN",
            "VTE",
            "MNL",
            "CEB",
            "DVO",
            "CGK",
            "SUB",
            "DPS",
            "UPG",
            "BWN",
            "ALA",
            "NQZ",
            "TAS",
            "DYU",
            "ASB",
        ]
    ),
    "Oceania": tuple(
        [
            "SYD",
            "MEL",
            "BNE",
            "PER",
            "ADL",
            "CBR",
            "OOL",
            "DRW",
            "HBA",
            "CNS",
            "AKL",
            "WLG",
            "CHC",
            "NAN",
            "NOU",
            "PPT",
            "POM",
            "GUM",
        ]
    ),
}

# Each region's share of requests: about its share of the world's Internet users (ITU
# "Facts and Figures 2023" and Internet World Stats 2023, rounded), split evenly among the
# region's simulated locations. ``--weights uniform`` gives every location the same share.
REGION_SHARE: dict[str, float] = {
    "Asia": 0.50,
    "Europe": 0.15,
    "Africa": 0.12,
    "North America": 0.08,
    "South America": 0.08,
    "Middle East": 0.05,
    "Oceania": 0.02,
}

EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True, slots=True)
class Location:
    """A simulated location: an edge, an origin, or both."""

    code: str
    city: str
    country: str
    region: str
    lat: float
    lon: float


def great_circle_km(a: Location, b: Location) -> float:
    """The great-circle distance between two locations (haversine), in kilometres."""
    phi1, phi2 = math.radians(a.lat), math.radians(b.lat)
    dphi = phi2 - phi1
    dlam = math.radians(b.lon - a.lon)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def region_of(code: str) -> str:
    """The region a candidate code is listed under (KeyError if it is not a candidate)."""
    for region, codes in CANDIDATES.items():
        if code in codes:
            return region
    raise KeyError(code)


def lookup(code: str) -> Location:
    """A location by IATA code, from ``airportsdata`` (KeyError naming an unknown code)."""
    record = airports().get(code.upper())
    if record is None:
        raise KeyError(f"no airport with IATA code {code!r}")
    try:
        region = region_of(code.upper())
    except KeyError:
        region = "Other"
    return Location(
        code.upper(),
        str(record["city"]),
        str(record["country"]),
        region,
        float(record["lat"]),
        float(record["lon"]),
    )


def candidate_count() -> int:
    """How many candidate locations there are."""
    return sum(len(codes) for codes in CANDIDATES.values())


def select_codes(n: int, required: Sequence[str] = ()) -> list[str]:
    """N codes by the documented stride rule, the ``required`` ones (origins) included."""
    total = candidate_count()
    if not 1 <= n <= total:
        raise ValueError(f"--locations must be between 1 and {total}")
    # Largest-remainder split of N among regions in proportion to their list sizes.
    quotas = {region: n * len(codes) / total for region, codes in CANDIDATES.items()}
    counts = {region: int(q) for region, q in quotas.items()}
    by_remainder = sorted(quotas, key=lambda r: (-(quotas[r] - counts[r]), r))
    for region in by_remainder[: n - sum(counts.values())]:
        counts[region] += 1
    chosen: list[str] = []
    for region, codes in CANDIDATES.items():
        k = counts[region]
        chosen += [codes[(i * len(codes)) // k] for i in range(k)] if k else []
    for code in required:
        if code.upper() not in chosen:
            # The origin's city replaces the chosen code nearest to the end of the list, so
            # the count stays N.
            chosen[-1 - [c in required for c in reversed(chosen)].index(False)] = code.upper()
    return chosen


def weights(locations: Sequence[Location], rule: str) -> list[float]:
    """Each location's share of the requests, by ``rule`` ("region" or "uniform")."""
    if rule == "uniform":
        return [1.0 / len(locations)] * len(locations)
    if rule != "region":
        raise ValueError(f"unknown weight rule {rule!r}")
    per_region: dict[str, int] = {}
    for loc in locations:
        per_region[loc.region] = per_region.get(loc.region, 0) + 1
    raw = [REGION_SHARE.get(loc.region, 0.01) / per_region[loc.region] for loc in locations]
    total = sum(raw)
    return [w / total for w in raw]


def choose_tiers(
    count: int,
    n_locations: int,
    origins: Sequence[int],
    rtt: Callable[[int, int], float],
    weight: Sequence[float],
) -> list[int]:
    """Indices of ``count`` upper-tier locations by greedy p-median (module docstring).

    Nodes ``0 .. n_locations - 1`` are the locations; ``origins`` are the origins' node
    indices; ``rtt`` gives the round-trip time between two nodes."""
    best = [min(rtt(i, o) for o in origins) for i in range(n_locations)]
    tiers: list[int] = []
    for _ in range(min(count, n_locations)):
        pick, pick_cost = -1, math.inf
        for c in range(n_locations):
            if c in tiers:
                continue
            cost = 0.0
            for i in range(n_locations):
                d = rtt(i, c)
                cost += weight[i] * (d if d < best[i] else best[i])
            if cost < pick_cost:
                pick, pick_cost = c, cost
        if pick < 0:
            break
        tiers.append(pick)
        best = [min(best[i], rtt(i, pick)) for i in range(n_locations)]
    return sorted(tiers)
