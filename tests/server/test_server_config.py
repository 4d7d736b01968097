"""The server/agent YAML: defaults, and mistakes reported with file, line, column and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from harken.errors import ConfigError
from harken.server import config as config_mod


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_empty_file_and_no_file_give_the_embedded_default(tmp_path: Path) -> None:
    for cfg in (config_mod.load(None), config_mod.load(write(tmp_path, ""))):
        assert cfg.agent.kind == "conversation" and cfg.agent.flow == "restaurant"
        assert cfg.agent.llm.base_url == "" and cfg.agent.stt.engine == "whisper"


def test_a_full_agent_section_loads(tmp_path: Path) -> None:
    cfg = config_mod.load(
        write(
            tmp_path,
            "agent:\n"
            "  llm: {base_url: 'http://localhost:8000/v1', model: m}\n"
            "  barge_in: {min_ms: 300, min_words: 3}\n"
            "  turn: {text: vote, silence_ms: 1500}\n"
            "  transfer_targets: ['+15550100']\n",
        )
    )
    a = cfg.agent
    assert a.llm.base_url.endswith("/v1") and a.barge_in.min_ms == 300 and a.turn.text == "vote"
    assert a.transfer_targets == ["+15550100"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("agent:\n  turn:\n    silence_ms: fast\n", "agent.yaml:3:17: agent.turn.silence_ms"),
        ("agent:\n  kind: robot\n", "agent.yaml:2:9: agent.kind"),
        ("agent:\n  bargein: {}\n", "did you mean 'barge_in'"),
        ("agent:\n  stt: {engine: vosk}\n", "agent.yaml:2:17: agent.stt.engine"),
        ("agent:\n  barge_in:\n    min_words: 0\n", "agent.yaml:3:16: agent.barge_in.min_words"),
        ("agent:\n  llm: {base_url: localhost}\n", "agent.yaml:2:19: agent.llm.base_url"),
        ("playback:\n  lead_ms: 500\n", "agent.yaml:2:12: playback.lead_ms"),
        ("agent: [1, 2]\n", "agent.yaml:1:8: agent"),
        ("agent:\n  kind: [echo\n", "agent.yaml:"),
    ],
)
def test_mistakes_name_file_line_and_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("(", r"\(")):
        config_mod.load(write(tmp_path, text))


def test_cli_overrides_are_type_checked() -> None:
    cfg = config_mod.load(None, {"agent": {"kind": "echo"}, "server": {"port": 9000}})
    assert cfg.agent.kind == "echo" and cfg.server.port == 9000
    with pytest.raises(ConfigError):
        config_mod.load(None, {"server": {"port": "x"}})
