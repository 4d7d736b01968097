"""`harken call` argument handling (no calls are made)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harken.cli import main


def test_list_names_every_shipped_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["call", "--list"]) == 0
    out = capsys.readouterr().out
    assert "book-all-in-one" in out and "bargein-hours-late" in out and "[quick" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["call"], "give --url ws://HOST:PORT/stream/twilio or --spawn"),
        (["call", "--url", "ws://x", "-s", "nope"], "no scenario 'nope'"),
        (["call", "--url", "ws://x", "--suite", "nope"], "no scenario in suite 'nope'"),
        (["call", "--url", "ws://x", "-n", "0"], "--concurrency: expected N or N,N,..."),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_bad_script_file_names_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - say: hi\n    after_s: 1\n")
    assert main(["call", "--url", "ws://x", "-s", str(bad)]) == 2
    assert f"{bad}:3:5: steps[0].after_s: unknown key 'after_s'" in capsys.readouterr().err
