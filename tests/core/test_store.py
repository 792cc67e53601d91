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


def test_two_quarantines_of_one_file_in_the_same_second_keep_both_copies(store):
    path = store.path("x")
    store.root.mkdir(parents=True)
    for blob in (b"first torn", b"second torn"):
        path.write_bytes(blob)
        assert store.load_json("x", schema=1) is None
    moved = sorted(p for p in store.root.iterdir() if ".corrupt-" in p.name)
    assert [p.read_bytes() for p in moved] == [b"first torn", b"second torn"]
    assert [p.name for p in moved] == ["x.json.corrupt-20250102T030405",
                                       "x.json.corrupt-20250102T030405-1"]


def test_clean_temp_with_stale_and_fresh_temp_files_removes_only_the_stale(store):
    import os
    import time

    store.save_json("x", {"v": 1}, schema=1)
    stale = store.root / ".x.json.abc123.tmp"
    stale_prev = store.root / ".x.json.prev.def456.tmp"
    fresh = store.root / ".x.json.ghi789.tmp"
    for p in (stale, stale_prev, fresh):
        p.write_bytes(b"partial")
    old = time.time() - 3600
    for p in (stale, stale_prev):
        os.utime(p, (old, old))
    assert store.clean_temp(max_age_s=300) == 2
    assert not stale.exists() and not stale_prev.exists() and fresh.exists()
    assert store.load_json("x", schema=1) == {"v": 1}


def test_save_with_previous_version_fsyncs_the_prev_copy_before_renaming_it(store, monkeypatch):
    import os

    store.save_json("x", {"v": 1}, schema=1)
    synced, real_fsync = [], os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    store.save_json("x", {"v": 2}, schema=1)
    names = [os.path.basename(p) for p in synced]
    assert any(n.startswith(".x.json.prev.") for n in names), names
    assert json.loads(store.path("x").with_name("x.json.prev").read_text())["data"] == {"v": 1}


def test_read_only_store_with_a_corrupt_file_leaves_every_file_in_place(store, caplog):
    store.save_json("x", {"v": 1}, schema=1)
    store.save_json("x", {"v": 2}, schema=1)
    store.path("x").write_bytes(b"{torn")
    before = {p.name: p.read_bytes() for p in store.root.iterdir()}
    reader = StateStore(store.root, read_only=True)
    loaded = reader.load_json_checked("x", schema=1)
    assert loaded.data == {"v": 1} and loaded.source.name == "x.json.prev"
    assert loaded.fell_back and "left in place" in loaded.problems[0]
    assert {p.name: p.read_bytes() for p in store.root.iterdir()} == before
    with pytest.raises(StateError):
        reader.save_json("y", {}, schema=1)
    assert not reader.path("y").exists()


def test_load_json_checked_names_the_file_used_and_what_was_wrong(store, caplog):
    store.save_json("x", {"v": 1}, schema=1)
    assert store.load_json_checked("x", schema=1).source == store.path("x")
    store.save_json("x", {"v": 2}, schema=1)
    store.path("x").write_text('{"schema": 9, "data": {}}')
    loaded = store.load_json_checked("x", schema=1)
    assert loaded.data == {"v": 1} and loaded.source == store.path("x").with_name("x.json.prev")
    assert loaded.problems == ("x.json is schema version 9, expected 1 (moved to "
                               "x.json.corrupt-20250102T030405)",)
    assert "using the previous version x.json.prev" in caplog.text
    store.path("x").with_name("x.json.prev").write_bytes(b"torn")
    caplog.clear()
    empty = store.load_json_checked("x", schema=1)
    assert empty.data is None and empty.source is None and empty.fell_back
    assert "no usable version left" in caplog.text
    assert "using the previous" not in caplog.text
