"""The normaliser follows the catalog through the real reducer process: ``previewvec
reduce`` with a private Redis, the folder store and the embedded index refits when the
index has doubled and re-normalises every vector, once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from contract.jobs import vector_id
from contract.layout import FEATURE_VERSION, VECTOR_DIM
from contract.records import encode_record
from contract.state import Runs
from contract.store.local import LocalStore
from previewvec.localredis import LocalRedis
from reducer.index.embedded import EmbeddedIndex
from reducer.normalize import Normalizer, normalizer_key
from testkit.records import synthetic_record

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_reduce_refits_and_renormalises_as_the_catalog_grows(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with LocalRedis() as server:
        runs = Runs.from_url(server.url)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREVIEWVEC_")},
               "PREVIEWVEC_BROKER_URL": server.url, "PREVIEWVEC_STORE": str(store.root),
               "PREVIEWVEC_INDEX": str(tmp_path / "index"),
               "PREVIEWVEC_NORMALIZER_SAMPLE": "30", "PREVIEWVEC_NORMALIZER_REFIT_GROWTH": "2"}

        def add_and_reduce(ids: range, scale: float = 1.0) -> None:
            for i in ids:
                record = synthetic_record(i, scale=scale)
                store.put(record.key, encode_record(record))
                runs.push_ready(record.key)
            result = subprocess.run([sys.executable, "-m", "previewvec.cli", "reduce"],
                                    env=env, cwd=REPO, capture_output=True, text=True,
                                    timeout=300)
            assert result.returncode == 0, result.stderr

        def current() -> Normalizer:
            return Normalizer.from_json(store.get(normalizer_key(FEATURE_VERSION)))

        def in_index(n: int) -> set[str]:
            index = EmbeddedIndex(tmp_path / "index", VECTOR_DIM)
            items = index.get([vector_id(f"rec-{i:07d}") for i in range(n)])
            assert len(items) == n
            return {item.metadata["normalizer"] for item in items}

        add_and_reduce(range(20))
        first = current()
        assert (first.fitted_on, first.catalog_size) == (20, 20)
        assert in_index(20) == {first.version}

        add_and_reduce(range(20, 45), scale=4.0)  # the index held 20 < 2 x 20: no refit
        assert current().version == first.version and in_index(45) == {first.version}

        add_and_reduce(range(45, 46), scale=4.0)  # the index holds 45 >= 40: refit
        second = current()
        assert second.version != first.version
        assert (second.fitted_on, second.catalog_size) == (30, 46)
        assert in_index(46) == {second.version}  # the old vectors too

        add_and_reduce(range(46, 47))  # 46 < 92: the same normaliser, nothing redone
        assert current().version == second.version and in_index(47) == {second.version}
