"""Small simulator configurations that run in well under a second."""

from __future__ import annotations

import dataclasses
from typing import Any

from pullkv.simulate.config import SimConfig
from pullkv.simulate.workload import WorkloadSpec


def small(**changes: Any) -> SimConfig:
    """20 locations, 20,000 requests over 20 simulated minutes, 2,000 keys."""
    workload_changes = {
        k: changes.pop(k) for k in list(changes) if k in WorkloadSpec.__dataclass_fields__
    }
    workload = WorkloadSpec(requests=20_000, duration=1200.0, keys=2000)
    base = SimConfig(
        locations=20,
        workload=dataclasses.replace(workload, **workload_changes),
        visibility_samples=30,
    )
    return dataclasses.replace(base, **changes)
