"""``harken bench speech``: the offline speech stack, part by part.

* ``vad``  — CPU per call of the dual-gate batched Silero VAD at 200 concurrent calls
  (:mod:`harken.bench.speech_vad`);
* ``turn`` — precision/recall and endpoint delay of Smart Turn (+ transcript veto) against a
  700 ms silence timer (:mod:`harken.bench.speech_vad`, turn part);
* ``stt``  — WER and end-of-speech → final transcript latency of streaming Whisper and
  pocketsphinx on synthesized utterances, wide-band and phone (:mod:`harken.bench.speech_stt`);
* ``tts``  — time to first audio of a short first clause, Piper and espeak-ng
  (:mod:`harken.bench.speech_tts`).

``--parts`` picks which run (all by default; the whole run takes a few minutes). The JSON has at
least ``vad_cpu_pct_per_call``, ``stt_wer``, ``stt_final_ms_p50`` and ``tts_first_audio_ms_p50``,
plus each part's own figures under its name.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from harken.bench import speech_stt, speech_tts, speech_vad

PARTS = ("vad", "turn", "stt", "tts")
_HEADLINE = {
    "vad": ("vad_cpu_pct_per_call",),
    "turn": (),
    "stt": (
        "stt_wer",
        "stt_final_ms_p50",
        "stt_final_ms_p90",
        "stt_phone_wer",
        "stt_phone_final_ms_p50",
        "stt_phone_final_ms_p90",
    ),
    "tts": ("tts_first_audio_ms_p50",),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma list of parts to run ({','.join(PARTS)})"
    )
    speech_vad.add_arguments(parser)
    speech_stt.add_arguments(parser)
    speech_tts.add_arguments(parser)


def run(args: argparse.Namespace) -> dict[str, Any]:
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown part(s) {sorted(unknown)}; choose from {PARTS}")
    runners = {
        "vad": speech_vad.run_vad,
        "turn": speech_vad.run_turn,
        "stt": speech_stt.run_stt,
        "tts": speech_tts.run_tts,
    }
    result: dict[str, Any] = {"load_avg_start": os.getloadavg()}
    for part in parts:
        figures = runners[part](args)
        result[part] = figures
        for key in _HEADLINE[part]:
            if key in figures:
                result[key] = figures[key]
    result["load_avg_end"] = os.getloadavg()
    return result


def report(result: dict[str, Any]) -> str:
    reporters = {
        "vad": speech_vad.report_vad,
        "turn": speech_vad.report_turn,
        "stt": speech_stt.report,
        "tts": speech_tts.report_tts,
    }
    out = [f"speech bench (load average {result['load_avg_start']} -> {result['load_avg_end']})"]
    for part in PARTS:
        if part in result:
            out.append(reporters[part](result[part]))
    return "\n\n".join(out)
