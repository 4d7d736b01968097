"""The sans-I/O layers under the LLM client: the SSE parser and the chunk decoder."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harken.errors import LLMResponseError
from harken.llm import ChunkDecoder, SSEEvent, SSEParser, TextDelta, ToolCall


def parse(data: bytes, cuts: list[int] | None = None) -> list[SSEEvent]:
    """All events of ``data`` fed in pieces cut at ``cuts``, then closed."""
    parser = SSEParser()
    events: list[SSEEvent] = []
    start = 0
    for cut in sorted(cuts or []):
        events += parser.feed(data[start:cut])
        start = cut
    events += parser.feed(data[start:])
    return events + parser.close()


def test_data_lines_done_and_comments() -> None:
    stream = b': keep-alive\n\ndata: {"a": 1}\n\n:comment\ndata: [DONE]\n\n'
    assert [e.data for e in parse(stream)] == ['{"a": 1}', "[DONE]"]


def test_multiline_data_fields_and_line_endings() -> None:
    stream = (
        b"\xef\xbb\xbfevent: update\r\nid: 7\r\nretry: 1500\r\ndata: one\r\ndata:two\r\n\r\n"
        b"data\rdata: x\r\r"  # CR-only endings; "data" alone is an empty data line
        b"id: 8\nevent: x\n\n"  # no data: not dispatched, and its event type is forgotten
        b"data: after\n\n"
    )
    assert parse(stream) == [
        SSEEvent("one\ntwo", "update", "7", 1500),
        SSEEvent("\nx", "message", "7", None),
        SSEEvent("after", "message", "8", None),
    ]


def test_crlf_split_across_feeds_is_one_line_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n\r") == [SSEEvent("a")]  # the LF belongs to the CR before it
    assert parser.feed(b"\ndata: b\n\n") == [SSEEvent("b")]


def test_multibyte_character_split_across_feeds() -> None:
    data = "data: caf\u00e9 \u2014 \U0001f600\n\n".encode()
    for cut in range(1, len(data)):
        assert parse(data, [cut]) == [SSEEvent("caf\u00e9 \u2014 \U0001f600")]


def test_close_dispatches_complete_lines_and_drops_a_cut_line() -> None:
    assert parse(b"data: [DONE]\n") == [SSEEvent("[DONE]")]
    assert parse(b'data: {"a": 1}\n\ndata: {"cut') == [SSEEvent('{"a": 1}')]


def test_overlong_line_raises() -> None:
    parser = SSEParser(max_line_bytes=100)
    with pytest.raises(LLMResponseError, match="longer than 100 bytes"):
        parser.feed(b"data: " + b"x" * 200)


# a strategy for event streams: fields with any text (no line breaks), comments, any line ending
_text = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=12
)
_eol = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """Events encoded with one line-ending style (a CR then a separate LF would be one CRLF),
    comments anywhere, with or without the optional space after ``data:``."""
    eol = draw(_eol)
    out = bytearray()
    expected: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        lines = draw(st.lists(_text, min_size=1, max_size=3))
        for line in lines:
            if draw(st.booleans()):
                out += b":" + draw(_text).encode() + eol
            sep = b": " if line.startswith(" ") or draw(st.booleans()) else b":"
            out += b"data" + sep + line.encode() + eol
        out += eol
        expected.append("\n".join(lines))
    return bytes(out), expected


@settings(max_examples=200, deadline=None)
@given(event_streams(), st.lists(st.integers(0, 400), max_size=12))
def test_any_chunking_gives_the_encoded_events(
    stream: tuple[bytes, list[str]], cuts: list[int]
) -> None:
    data, expected = stream
    cuts = [c for c in cuts if c <= len(data)]
    assert [e.data for e in parse(data, cuts)] == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"data: ", b"data:", b"event: e", b"id: 1", b": c", b"x", b"\n", b"\r"])
        | st.binary(max_size=6),
        max_size=30,
    ),
    st.lists(st.integers(0, 200), max_size=10),
)
def test_arbitrary_bytes_parse_the_same_however_chunked(
    parts: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(parts)
    cuts = [c for c in cuts if c <= len(data)]
    assert parse(data, cuts) == parse(data)


# --------------------------------------------------------------------------------------------
# ChunkDecoder


def chunk(delta: dict[str, object], finish: str | None = None) -> str:
    return orjson.dumps(
        {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    ).decode()


def tool_head(index: int, call_id: str, name: str) -> dict[str, object]:
    fn = {"name": name, "arguments": ""}
    return {"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": fn}]}


def tool_args(index: int, piece: str) -> dict[str, object]:
    return {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}


def test_interleaved_tool_fragments_complete_at_finish_in_index_order() -> None:
    d = ChunkDecoder()
    out = d.feed(chunk({"role": "assistant", "content": ""}))
    assert out == [] and not d.got_token
    assert d.feed(chunk({"content": "Checking."})) == [TextDelta("Checking.")]
    assert d.got_token
    for data in (
        chunk(tool_head(1, "call_b", "lookup")),
        chunk(tool_head(0, "call_a", "weather")),
        chunk(tool_args(1, '{"q": "pi')),
        chunk(tool_args(0, '{"city"')),
        chunk(tool_args(1, 'zza"}')),
        chunk(tool_args(0, ': "Oslo", "days": [1, 2]}')),
    ):
        assert d.feed(data) == []  # nothing until the finish
    assert d.feed(chunk({}, "tool_calls")) == [
        ToolCall("call_a", "weather", {"city": "Oslo", "days": [1, 2]}),
        ToolCall("call_b", "lookup", {"q": "pizza"}),
    ]
    usage = {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}
    assert d.feed(orjson.dumps({"choices": [], "usage": usage}).decode()) == []
    assert d.feed("[DONE]") == [] and d.done
    assert d.end() == [] and d.usage == usage and d.reason == "tool_calls"


def test_tool_calls_without_index_or_id_and_without_finish() -> None:
    d = ChunkDecoder()
    d.feed(chunk({"tool_calls": [{"id": "x1", "function": {"name": "a", "arguments": "{}"}}]}))
    d.feed(chunk({"tool_calls": [{"id": "x2", "function": {"name": "b"}}]}))
    d.feed(chunk({"tool_calls": [{"function": {"arguments": '{"k": 1}'}}]}))  # continues b
    d.feed(chunk({"tool_calls": [{"index": 5, "function": {"name": "c", "arguments": ""}}]}))
    assert d.feed("[DONE]") == [
        ToolCall("x1", "a", {}),
        ToolCall("x2", "b", {"k": 1}),
        ToolCall("call_5", "c", {}),
    ]
    assert d.reason == "tool_calls"


@pytest.mark.parametrize(
    ("arguments", "match"),
    [('{"city": "Os', "malformed JSON arguments"), ("[1, 2]", "not a JSON object")],
)
def test_bad_tool_arguments_name_the_tool(arguments: str, match: str) -> None:
    d = ChunkDecoder()
    d.feed(chunk(tool_head(0, "call_1", "get_weather")))
    d.feed(chunk(tool_args(0, arguments)))
    with pytest.raises(LLMResponseError, match=f"'get_weather'.*{match}"):
        d.feed(chunk({}, "tool_calls"))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ('{"choices": [{"delta": {"content": "a"}', "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"id": "x"}', "no choices"),
        ('{"choices": [{"index": 0, "delta": {"content": 5}}]}', "content is not text"),
        ('{"error": {"message": "overloaded"}}', "error mid-stream: overloaded"),
        (
            '{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0}]}, '
            '"finish_reason": "tool_calls"}]}',
            "has no name",
        ),
    ],
)
def test_malformed_chunks_raise(data: str, match: str) -> None:
    with pytest.raises(LLMResponseError, match=match):
        ChunkDecoder().feed(data)


def test_a_stream_cut_short_raises_at_the_end() -> None:
    d = ChunkDecoder()
    d.feed(chunk({"content": "Hel"}))
    with pytest.raises(LLMResponseError, match="cut short"):
        d.end()


def test_non_streamed_completion() -> None:
    d = ChunkDecoder()
    doc = {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "On it.",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": 1}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"total_tokens": 5},
    }
    assert d.feed_completion(doc) == [TextDelta("On it."), ToolCall("c1", "f", {"a": 1})]
    assert d.done and d.reason == "tool_calls" and d.usage == {"total_tokens": 5}
