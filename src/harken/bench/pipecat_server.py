# mypy: ignore-errors
"""The pipecat baseline server of ``harken bench echo --baseline pipecat``.

NOT PART OF HARKEN'S RUNTIME: this script runs under the bench's own virtual environment
(``.bench/pipecat-venv``, ``pipecat-ai[websocket,silero]==1.14.0`` + uvicorn), never imported by
harken. It is pipecat's natural Twilio setup, as its telephony examples build it:

* FastAPI + uvicorn, one WebSocket endpoint (``/ws``); ``parse_telephony_websocket`` reads
  Twilio's ``connected``/``start``;
* ``FastAPIWebsocketTransport`` with ``TwilioFrameSerializer`` (auto hang-up off: there is no
  Twilio account to call), 8 kHz in and out;
* ``Pipeline([transport.input(), (VADProcessor(SileroVADAnalyzer())), Echo(), transport.output()])``
  run by a ``PipelineWorker`` on a ``WorkerRunner``, one per call.

``Echo`` turns each ``InputAudioRawFrame`` into an ``OutputAudioRawFrame``. In the ``vad``
scenario it also answers each ``VADUserStoppedSpeakingFrame`` with the bench's pre-synthesised
reply, in place of the echo, one reply slice per input frame (the same rule as harken's
``bench_vad`` agent, so the returned stream keeps the caller's byte count). Logging is set to
WARNING, as a production deployment would run it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI, WebSocket
from fastapi.responses import PlainTextResponse
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner

RATE = 8000


class Echo(FrameProcessor):
    """Input audio out again; with a reply clip, the reply replaces the echo after each VAD stop."""

    def __init__(self, reply: bytes = b"") -> None:
        super().__init__()
        self._reply = reply
        self._pos = -1

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            audio = frame.audio
            if self._pos >= 0:
                end = self._pos + len(audio)
                piece = self._reply[self._pos : end]
                audio = piece + audio[len(piece) :]
                self._pos = end if end < len(self._reply) else -1
            await self.push_frame(
                OutputAudioRawFrame(
                    audio=audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels
                )
            )
            return
        if isinstance(frame, VADUserStoppedSpeakingFrame) and self._reply and self._pos < 0:
            self._pos = 0
        await self.push_frame(frame, direction)


def build_app(vad: bool, reply: bytes) -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.websocket("/ws")
    async def media(websocket: WebSocket) -> None:
        await websocket.accept()
        _, call_data = await parse_telephony_websocket(websocket)
        serializer = TwilioFrameSerializer(
            stream_sid=call_data["stream_id"],
            call_sid=call_data["call_id"],
            params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
        )
        transport = FastAPIWebsocketTransport(
            websocket=websocket,
            params=FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                serializer=serializer,
                audio_in_sample_rate=RATE,
                audio_out_sample_rate=RATE,
            ),
        )
        processors: list[FrameProcessor] = [transport.input()]
        if vad:
            from pipecat.audio.vad.silero import SileroVADAnalyzer
            from pipecat.processors.audio.vad_processor import VADProcessor

            processors.append(VADProcessor(vad_analyzer=SileroVADAnalyzer()))
        processors += [Echo(reply if vad else b""), transport.output()]
        worker = PipelineWorker(
            Pipeline(processors),
            params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
        )

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(transport: object, client: object) -> None:
            await worker.cancel()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scenario", choices=("echo", "vad"), default="echo")
    parser.add_argument("--reply", help="raw 8 kHz int16 PCM the vad agent answers with")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    reply = b""
    if args.scenario == "vad" and args.reply:
        reply = Path(args.reply).read_bytes()
    app = build_app(args.scenario == "vad", reply)
    print(f"pipecat baseline ready on ws://{args.host}:{args.port}/ws", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
