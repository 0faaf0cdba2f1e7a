"""pullkv survives power loss: on lazyfs, every acknowledged write and every file a restart
needs (master key, admin token) is still there after a crash at a random moment, and the
server always starts again. More trials: ``python bench/bench_powerloss.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.pg import fresh_schema
from tests.powerloss.harness import require_fuse
from tests.powerloss.trials import TrialPlan, TrialResult, plans, run_trial

TRIALS = int(os.environ.get("PULLKV_POWERLOSS_TRIALS", "20"))
SEED = int(os.environ.get("PULLKV_POWERLOSS_SEED", "14"))


def _explain(result: TrialResult) -> str:
    return (
        f"{result.plan}: acknowledged {result.acknowledged}, lost {len(result.lost)} "
        f"(e.g. {result.lost[:5]}), changed {len(result.wrong)}, restarted {result.restarted}, "
        f"token works {result.token_works}; {result.error}"
    )


@pytest.fixture(autouse=True)
def _fuse() -> None:
    require_fuse()


@pytest.mark.parametrize("plan", plans(TRIALS, SEED), ids=lambda p: f"seed{p.seed}")
def test_serve_survives_power_loss(plan: TrialPlan, tmp_path: Path) -> None:
    result = run_trial(plan, tmp_path)
    assert result.ok, _explain(result)
    if not plan.crash_during_start:
        assert result.acknowledged > 0, "the load should have written something"


@pytest.mark.parametrize("number", range(2))
def test_origin_on_postgresql_survives_power_loss_of_its_data_folder(
    number: int, tmp_path: Path
) -> None:
    # The store is PostgreSQL (its own durability); the data folder on lazyfs holds the
    # master key and admin token, written by the same code as on SQLite.
    with fresh_schema("powerloss") as url:
        plan = plans(5, SEED + number, ["--store", url])[4 if number else 0]
        result = run_trial(plan, tmp_path)
    assert result.ok, _explain(result)
