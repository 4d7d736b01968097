"""Round trips through both stores (SQLite file and a real PostgreSQL server)."""

from __future__ import annotations

from typing import Any

import pytest

from harken.errors import RecordsError
from harken.records import CallEnd, CallEvent, CallInfo, CallRecorder, TurnRecord
from harken.records.store import open_store

T0 = 1_700_000_000.0

TIMINGS: dict[str, float | None] = {
    "speech_end": 4100.0,
    "endpoint": 4400.5,
    "endpoint_rule": 300.5,
    "stt_final": 4480.0,
    "llm_first_token": 4800.25,
    "tts_first_audio": 4950.0,
    "first_audio_out": 5010.0,
    "playback_done": None,
}


def _call(call_id: str = "CA1", started: float = T0) -> list[Any]:
    return [
        CallInfo(
            call_id,
            "twilio",
            started,
            "+15550001111",
            "+15550002222",
            "restaurant",
            {"stream_sid": "MZ1", "nested": {"a": [1, 2]}},
        ),
        TurnRecord(
            call_id,
            0,
            "greeting",
            "",
            "Hi, thanks for calling.",
            "Hi, thanks for calling.",
            at=started + 0.2,
        ),
        TurnRecord(
            call_id,
            1,
            "turn",
            "a table for two",
            "Sure, for what time tonight?",
            "Sure, for what",
            True,
            TIMINGS,
            [{"name": "check", "args": {"n": 2}, "ok": True}],
            at=started + 4.5,
        ),
        CallEvent(call_id, started + 6.0, "barge_in", {"heard_words": 3}),
        CallEvent(call_id, started + 6.0, "backchannel", {"text": "uh-huh"}),
        TurnRecord(call_id, 2, "dtmf", "1234#", "Got it: 1234.", None, at=started + 9.0),
        CallEvent(call_id, started + 12.0, "hangup", {}),
        CallEnd(call_id, started + 12.5, "hangup", 12.5),
    ]


async def test_round_trip(make_store: Any) -> None:
    store = make_store()
    await store.open()
    records = _call()
    await store.write(records[:3])
    for rec in records[3:]:
        if isinstance(rec, TurnRecord):
            await store.turn(rec)
        elif isinstance(rec, CallEvent):
            await store.event(rec)
        else:
            await store.call_ended(rec)
    detail = await store.get_call("CA1")
    assert detail is not None
    assert detail.info == records[0]
    assert detail.turns == [r for r in records if isinstance(r, TurnRecord)]
    assert [t.index for t in detail.turns] == [0, 1, 2]
    assert detail.turns[1].timings == TIMINGS
    assert detail.turns[1].interrupted is True
    assert detail.turns[2].assistant_heard is None
    # same timestamp: the write order decides
    assert [e.kind for e in detail.events] == ["barge_in", "backchannel", "hangup"]
    assert detail.end == records[-1]
    [summary] = await store.list_calls()
    assert (summary.call_id, summary.turns, summary.outcome) == ("CA1", 3, "hangup")
    assert summary.duration_s == 12.5 and summary.started_at == T0
    assert await store.get_call("nope") is None


async def test_turns_come_back_by_index_and_rewrite_replaces(make_store: Any) -> None:
    store = make_store()
    await store.open()
    await store.call_started(CallInfo("CA2", "telnyx", T0))
    for i in (3, 0, 2, 1):
        await store.turn(TurnRecord("CA2", i, "turn", f"u{i}", f"a{i}", at=T0 + i))
    # the heard text became known later: the same index is written again
    await store.turn(TurnRecord("CA2", 1, "turn", "u1", "a1", "a", True, at=T0 + 1))
    detail = await store.get_call("CA2")
    assert detail is not None
    assert [t.user_text for t in detail.turns] == ["u0", "u1", "u2", "u3"]
    assert (detail.turns[1].assistant_heard, detail.turns[1].interrupted) == ("a", True)
    assert detail.end is None


async def test_records_without_a_start_still_show_up(make_store: Any) -> None:
    store = make_store()
    await store.open()
    await store.write([TurnRecord("CA3", 0, "greeting", "", "hello", at=T0 + 1)])
    await store.write([CallEnd("CA3", T0 + 10, "caller_hangup", 9.5)])
    [summary] = await store.list_calls()
    assert (summary.call_id, summary.carrier, summary.turns) == ("CA3", "", 1)
    assert summary.started_at == T0 + 1  # from the first record
    await store.call_started(CallInfo("CA3", "plivo", T0 + 0.5, agent="x"))
    detail = await store.get_call("CA3")
    assert detail is not None
    assert (detail.info.carrier, detail.info.started_at) == ("plivo", T0 + 0.5)
    assert detail.end == CallEnd("CA3", T0 + 10, "caller_hangup", 9.5)  # kept


async def test_list_newest_first_with_paging(make_store: Any) -> None:
    store = make_store()
    await store.open()
    for i in range(7):
        await store.write(_call(f"C{i}", T0 + 100 * i))
    calls = await store.list_calls(limit=3)
    assert [c.call_id for c in calls] == ["C6", "C5", "C4"]
    calls = await store.list_calls(limit=3, offset=5)
    assert [c.call_id for c in calls] == ["C1", "C0"]


async def test_schema_is_idempotent_and_reopens(make_store: Any) -> None:
    store = make_store()
    await store.open()
    await store.write(_call())
    await store.close()
    again = make_store()
    await again.open()
    await again.open()  # a second open is a no-op
    detail = await again.get_call("CA1")
    assert detail is not None and len(detail.turns) == 3


async def test_recorder_writes_through_either_store(make_store: Any) -> None:
    recorder = CallRecorder(make_store())
    records = _call("CR")
    recorder.start(records[0])  # queued before open: written once it runs
    await recorder.open()
    for rec in records[1:]:
        if isinstance(rec, TurnRecord):
            assert recorder.turn(rec)
        elif isinstance(rec, CallEvent):
            assert recorder.event(rec)
        else:
            assert recorder.end(rec)
    assert await recorder.flush(timeout=10)
    stats = recorder.stats
    assert (stats.accepted, stats.written, stats.dropped, stats.failed) == (8, 8, 0, 0)
    detail = await recorder.store.get_call("CR")
    assert detail is not None and len(detail.turns) == 3 and detail.end is not None
    await recorder.close()
    assert not recorder.turn(records[1])  # closed: dropped and counted
    assert recorder.stats.dropped == 1


async def test_writes_before_open_are_refused(make_store: Any) -> None:
    store = make_store()
    with pytest.raises(RecordsError):
        await store.write(_call())


def test_open_store_picks_the_backend(tmp_path: Any) -> None:
    from harken.records.postgres import PostgresCallStore
    from harken.records.sqlite import SqliteCallStore

    assert isinstance(open_store(sqlite_path=str(tmp_path / "x.db")), SqliteCallStore)
    assert isinstance(open_store(postgres_dsn="host=/tmp dbname=x"), PostgresCallStore)
