"""``harken calls list|show``: the table, the timeline, JSON, errors; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from harken.cli import main
from harken.records import CallEnd, CallEvent, CallInfo, TurnRecord
from harken.records.cli import format_list, latency_line
from harken.records.postgres import PostgresCallStore
from harken.records.sqlite import SqliteCallStore

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def _records() -> list[Any]:
    return [
        CallInfo("CA-one", "twilio", T0, "+15550001", "+15550002", "restaurant", {"lang": "en"}),
        TurnRecord("CA-one", 0, "greeting", "", "Hello! Table or takeaway?", None, at=T0 + 0.1),
        TurnRecord(
            "CA-one",
            1,
            "turn",
            "a table for two please",
            "Lovely, for what time tonight?",
            "Lovely, for",
            True,
            {
                "speech_end": 3000.0,
                "endpoint": 3250.0,
                "stt_final": 3310.0,
                "llm_first_token": 3600.0,
                "first_audio_out": 3820.0,
                "custom_stage": 12.5,
            },
            [{"name": "check_tables", "args": {"party": 2}}],
            at=T0 + 3.3,
        ),
        CallEvent("CA-one", T0 + 4.0, "barge_in", {"heard": "Lovely, for"}),
        TurnRecord("CA-one", 2, "turn", "eight", "Eight it is.", "Eight it is.", at=T0 + 6.0),
        CallEvent("CA-one", T0 + 8.0, "hangup"),
        CallEnd("CA-one", T0 + 83.0, "hangup", 83.0),
        CallInfo("CA-two", "telnyx", T0 + 100),
    ]


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "calls.db"
    store = SqliteCallStore(path)
    await store.open()
    await store.write(_records())
    await store.close()
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["calls", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_table(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "list", "--db", str(db))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STARTED", "(UTC)", "DURATION", "TURNS", "OUTCOME"]
    assert lines[1].split() == ["CA-two", "2023-11-14", "22:15:00", "-", "0", "(no", "end)"]
    assert lines[2].split() == ["CA-one", "2023-11-14", "22:13:20", "1:23", "3", "hangup"]
    code, out, _ = _run(capsys, "list", "--db", str(db), "--limit", "1")
    assert len(out.splitlines()) == 2


def test_show_timeline(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "show", "CA-one", "--db", str(db))
    assert code == 0
    assert "carrier   twilio" in out
    assert "from/to   +15550001 -> +15550002" in out
    assert "outcome   hangup" in out
    assert "turns     3 (1 interrupted)" in out
    assert 'metadata  {"lang":"en"}' in out
    body = out[out.index("[") :].splitlines()
    heads = [line for line in body if line.startswith("[")]
    assert heads == [
        "[   +0.10s] #0 greeting",
        "[   +3.30s] #1 turn  INTERRUPTED",
        '[   +4.00s] event barge_in {"heard":"Lovely, for"}',
        "[   +6.00s] #2 turn",
        "[   +8.00s] event hangup",
    ]
    assert "    caller: a table for two please" in body
    assert "    agent:  Lovely, for what time tonight?" in body
    assert "    heard:  Lovely, for" in body
    assert "    heard:  (all of it)" in body
    assert "    heard:  (unknown)" in body
    assert (
        "    ms:     speech_end 3000  endpoint 3250  stt_final 3310  llm_first_token 3600  "
        "first_audio_out 3820  custom_stage 12  => response 820"
    ) in body
    assert '    tool:   {"name":"check_tables","args":{"party":2}}' in body


def test_json_output(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "list", "--db", str(db), "--json")
    assert code == 0
    listed = orjson.loads(out)
    assert [c["call_id"] for c in listed] == ["CA-two", "CA-one"]
    assert listed[1]["turns"] == 3 and listed[1]["outcome"] == "hangup"
    code, out, _ = _run(capsys, "show", "CA-one", "--db", str(db), "--json")
    detail = orjson.loads(out)
    assert detail["info"]["metadata"] == {"lang": "en"}
    assert [t["index"] for t in detail["turns"]] == [0, 1, 2]
    assert detail["turns"][1]["timings"]["first_audio_out"] == 3820.0
    assert detail["end"]["outcome"] == "hangup"


def test_errors(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "show", "nope", "--db", str(db))
    assert (code, out) == (1, "no call 'nope'\n")
    code, out, err = _run(capsys, "list", "--db", str(tmp_path / "missing.db"))
    assert code == 1 and "no call records at" in err
    assert not (tmp_path / "missing.db").exists()  # reading never creates the file
    code, _, err = _run(capsys, "list", "--db", str(db), "--limit", "0")
    assert code == 1 and "--limit" in err


def test_format_helpers() -> None:
    assert format_list([]) == "no calls recorded\n"
    assert latency_line({"playback_done": None, "endpoint": 1.4}) == "endpoint 1  playback_done -"


def test_the_installed_command(db: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "harken.cli", "calls", "list", "--db", str(db)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "CA-one" in out and "hangup" in out


async def test_show_from_postgres(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = PostgresCallStore(pg_dsn)
    await store.open()
    await store.write(_records())
    await store.close()
    # the CLI runs its own event loop: run it on a thread, as the command would
    code = await asyncio.to_thread(main, ["calls", "show", "CA-one", "--dsn", pg_dsn])
    out = capsys.readouterr().out
    assert code == 0
    assert "#1 turn  INTERRUPTED" in out and "=> response 820" in out
