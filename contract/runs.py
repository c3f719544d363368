"""Compatibility path: run state now lives in :mod:`contract.state` (one module per
concern). Import from there in new code."""

from contract.state import (  # noqa: F401 - re-exported
    CRASH_COUNT_TTL_S,
    IF_ABSENT,
    PRODUCER_ACTIVE_STATES,
    READY_QUEUE,
    RUN_PARTS,
    RUN_SETTLE_S,
    RUNS_INDEX,
    STATES,
    CrashCount,
    Housekeeping,
    Runs,
    RunStatus,
    new_run_id,
    parse_ready_entry,
)
from contract.state.connection import REDIS_RETRIES, REDIS_RETRY_CAP_S  # noqa: F401
