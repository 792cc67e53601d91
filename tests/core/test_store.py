"""State files are versioned, written atomically, recovered from corruption, thread safe."""

import json
import threading
from datetime import UTC, datetime

import pytest

from learning.core.errors import StateError
from learning.core.store import StateStore, runmode_namespace, state_root


@pytest.fixture
def store(tmp_path) -> StateStore:
    return StateStore(tmp_path / "learning" / "default" / "dry_run",
                      clock=lambda: datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))


def test_save_then_load_round_trips_with_schema_and_meta(store):
    store.save_json("bandit", {"a": [1, 2]}, schema=3, meta={"data_end": "2025-01-01"})
    assert store.load_json("bandit", schema=3) == {"a": [1, 2]}
    assert store.load_meta("bandit") == {"data_end": "2025-01-01"}
    doc = json.loads(store.path("bandit").read_text())
    assert doc["schema"] == 3 and doc["saved_at"].startswith("2025-01-02")


def test_second_save_keeps_previous_version(store):
    store.save_json("x", {"v": 1}, schema=1)
    store.save_json("x", {"v": 2}, schema=1)
    prev = json.loads(store.path("x").with_name("x.json.prev").read_text())
    assert prev["data"] == {"v": 1}
    assert store.load_json("x", schema=1) == {"v": 2}


def test_file_truncated_mid_write_is_quarantined_and_previous_loaded(store, caplog):
    store.save_json("x", {"v": 1}, schema=1)
    store.save_json("x", {"v": 2, "pad": "y" * 100}, schema=1)
    path = store.path("x")
    path.write_bytes(path.read_bytes()[:40])  # what a crash mid-write would leave
    assert store.load_json("x", schema=1) == {"v": 1}
    assert any(p.name.startswith("x.json.corrupt-") for p in path.parent.iterdir())
    assert "unreadable" in caplog.text and "x.json" in caplog.text


def test_unknown_schema_version_is_quarantined(store, caplog):
    store.save_json("x", {"v": 1}, schema=1)
    store.save_json("x", {"v": 2}, schema=2)
    assert store.load_json("x", schema=1) == {"v": 1}  # the .prev copy
    assert "schema version 2, expected 1" in caplog.text


def test_missing_state_loads_none(store):
    assert store.load_json("nothing", schema=1) is None


def test_accept_rejects_state_from_a_later_period(store):
    store.save_json("bandit", {"v": 1}, schema=1, meta={"data_end": "2025-06-01T00:00:00+00:00"})
    start = "2025-03-01T00:00:00+00:00"
    assert store.load_json("bandit", schema=1, accept=lambda m: m["data_end"] <= start) is None
    assert store.path("bandit").exists(), "a rejected but good file stays in place"


def test_concurrent_thread_writers_never_leave_a_torn_file(store):
    errors = []

    def writer(k: int) -> None:
        try:
            for i in range(40):
                store.save_json("shared", {"writer": k, "i": i, "blob": "z" * 2000}, schema=1)
        except Exception as err:  # pragma: no cover - the assertion reports it
            errors.append(err)

    def reader() -> None:
        for _ in range(200):
            data = store.load_json("shared", schema=1)
            if data is not None and len(data["blob"]) != 2000:
                errors.append(ValueError("torn"))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.load_json("shared", schema=1)["i"] == 39
    assert not [p for p in store.root.iterdir() if p.name.endswith(".tmp")]


def test_torch_state_round_trip_loads_weights_only(store):
    torch = pytest.importorskip("torch")
    sd = {"w": torch.arange(6.0).reshape(2, 3)}
    store.save_torch("net", sd, schema=1, meta={"pairs": ["BTC/USDT"]})
    loaded, meta = store.load_torch("net", schema=1)
    assert torch.equal(loaded["w"], sd["w"]) and meta == {"pairs": ["BTC/USDT"]}


def test_truncated_torch_file_falls_back_to_previous(store):
    torch = pytest.importorskip("torch")
    store.save_torch("net", {"w": torch.ones(3)}, schema=1)
    store.save_torch("net", {"w": torch.zeros(300)}, schema=1)
    p = store.path("net", ".pt")
    p.write_bytes(p.read_bytes()[:100])
    loaded, _ = store.load_torch("net", schema=1)
    assert torch.equal(loaded["w"], torch.ones(3))


def test_state_root_separates_identifier_and_runmode(tmp_path):
    assert state_root(tmp_path, "learning", "abc", "live") == tmp_path / "learning/abc/live"
    assert state_root(tmp_path, "learning", "abc", "hyperopt").name == "backtest"
    assert runmode_namespace("webserver") == "other"
    with pytest.raises(StateError):
        state_root(tmp_path, "learning", "../evil", "live")
