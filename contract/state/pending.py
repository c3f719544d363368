"""Which recordings need no resolution: a job queued in any run, or a state in this run.

``pv:pending:<recording id>`` (a string: the run id) exists while a job of the recording
is queued or running in some run. The transition script (``lua/run_transition.lua``) is
its one writer: it sets it when the recording becomes "queued" in a run and deletes it
when the recording leaves "queued" there (done, skipped, failed), unless another run has
queued it since. So a second producer (another dump, an on-demand submission) does not
resolve again what the first has already queued.

Bounded memory: one key per queued job, and producers only publish while the broker
queue is under its high-water mark, so the keys number about the queued messages. Each
expires after :data:`PENDING_TTL_S` all the same: a run abandoned with jobs queued (its
keys expire as they are) must not hide its recordings from later producers for long.
The fact is a hint to save calls, never needed for correctness: when it is missing (or
expired while the job still waits) the recording is resolved and published again, and
the worker skips a recording whose record is stored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from contract.errors import is_transient
from contract.state.keys import pending_key, run_key
from contract.state.scripts import StateBase

# A queued job normally leaves "queued" within minutes (the queue is bounded by the
# high-water mark); a day covers a long backlog and bounds a stale fact's life.
PENDING_TTL_S = 86_400
# States of a recording in the same run that leave nothing to resolve: queued (its job
# waits), done or skipped; and failed, unless the failure was transient (an upstream that
# was down may answer for its next release). The resolver's per-recording steps (ISRC,
# song search) do not depend on the release, so a recording no source matched is not
# asked again through each of its other releases in the same run.
HANDLED_STATES = ("queued", "done", "skipped")


class Pending(StateBase):
    def pending_run(self, recording_id: str) -> str | None:
        """The run in which a job of the recording is queued, or None."""
        raw = self._redis.get(pending_key(recording_id))
        return None if raw is None else (raw.decode() if isinstance(raw, bytes) else raw)

    def handled(self, run_id: str | None, recording_ids: Sequence[str]
                ) -> dict[str, str]:
        """The recordings that need no resolution for ``run_id``, each with why: "queued"
        (its job is queued in another run), "in_run" (``run_id`` has it queued, done,
        skipped, or failed for good). One round trip for the lot, two with failures."""
        if not recording_ids:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        pipe.mget([pending_key(rid) for rid in recording_ids])
        if run_id is not None:
            pipe.hmget(run_key(run_id, "state"), list(recording_ids))
        replies = pipe.execute()
        states = replies[1] if run_id is not None else [None] * len(recording_ids)
        out: dict[str, str] = {}
        failed = []
        for rid, owner, state in zip(recording_ids, replies[0], states, strict=True):
            owner = owner.decode() if isinstance(owner, bytes) else owner
            state = state.decode() if isinstance(state, bytes) else state
            if state in HANDLED_STATES or (owner is not None and owner == run_id):
                out[rid] = "in_run"
            elif owner is not None:
                out[rid] = "queued"
            elif state == "failed":
                failed.append(rid)
        if failed and run_id is not None:
            entries = self._redis.hmget(run_key(run_id, "failures"), failed)
            for rid, raw in zip(failed, entries, strict=True):
                if raw is not None and not is_transient(_failure_code(raw)):
                    out[rid] = "in_run"
        return out


def _failure_code(raw: str | bytes) -> str:
    try:
        entry = json.loads(raw)
    except ValueError:
        return ""
    return str(entry.get("code", "")) if isinstance(entry, dict) else ""
