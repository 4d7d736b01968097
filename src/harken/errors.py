"""Every exception harken raises on purpose derives from :class:`HarkenError`.

The tree::

    HarkenError
    ├── ConfigError              bad configuration (file, CLI flag, environment)
    ├── ProtocolError            bytes or JSON that break a wire protocol
    │   ├── LocalProtocolError   *we* were asked to produce something invalid
    │   └── RemoteProtocolError  the *peer* sent something invalid (ends at most that call)
    ├── AudioError               bad audio parameters (rate, width, length)
    ├── PipelineError            the frame pipeline was misused or a stage failed
    │   ├── StageError           a stage raised while handling a frame (wraps the cause)
    │   └── CallClosedError      a frame was fed to a call that has already ended
    ├── TransportError           a transport could not send or receive
    ├── ToolError                an agent tool got invalid arguments or could not do its job
    ├── RecordsError             a call-record store could not open, write or read
    └── ServiceError             a model or remote provider failed
        ├── ProviderError        a remote provider answered with an error
        └── LLMError             a chat-completions stream failed (URL, model, attempts)
            ├── LLMHTTPError       the server answered an error status
            ├── LLMTimeoutError    no first token, or the stream stalled, in time
            ├── LLMConnectionError the connection failed or dropped
            └── LLMResponseError   the stream was malformed or cut short

The local/remote split follows h11: a :class:`RemoteProtocolError` is the peer's fault and is
answered by ending that one call; a :class:`LocalProtocolError` is a bug on our side.
"""

from __future__ import annotations

__all__ = [
    "AudioError",
    "CallClosedError",
    "ConfigError",
    "HarkenError",
    "LLMConnectionError",
    "LLMError",
    "LLMHTTPError",
    "LLMResponseError",
    "LLMTimeoutError",
    "LocalProtocolError",
    "PipelineError",
    "ProtocolError",
    "ProviderError",
    "RecordsError",
    "RemoteProtocolError",
    "ServiceError",
    "StageError",
    "ToolError",
    "TransportError",
]


class HarkenError(Exception):
    """Root of every exception harken raises deliberately."""


class ConfigError(HarkenError):
    """Configuration is missing or invalid."""


class ProtocolError(HarkenError):
    """Data does not follow a wire protocol."""


class LocalProtocolError(ProtocolError):
    """We were asked to build an invalid message (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something invalid; this ends at most the peer's call."""


class AudioError(HarkenError):
    """Invalid audio parameters or buffers."""


class PipelineError(HarkenError):
    """The pipeline runtime was misused, or a stage failed."""


class StageError(PipelineError):
    """A stage raised while handling a frame; ``stage`` names it and ``__cause__`` is the error."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"stage {stage!r}: {message}")
        self.stage = stage


class CallClosedError(PipelineError):
    """A frame was fed to a call that has already finished."""


class TransportError(HarkenError):
    """A transport failed to send or receive."""


class ToolError(HarkenError):
    """An agent tool got invalid arguments or could not do its job; the message is speakable."""


class RecordsError(HarkenError):
    """A call-record store (SQLite, PostgreSQL) could not open, write or read."""


class ServiceError(HarkenError):
    """A model or a remote service failed."""


class ProviderError(ServiceError):
    """A remote provider answered with an error status."""

    def __init__(self, provider: str, status: int | None, message: str) -> None:
        detail = f" (status {status})" if status is not None else ""
        super().__init__(f"{provider}{detail}: {message}")
        self.provider = provider
        self.status = status


class LLMError(ServiceError):
    """A chat-completions request failed; the message ends with the URL, model and attempts."""

    def __init__(self, message: str, *, url: str = "", model: str = "", attempts: int = 0) -> None:
        where = [f"POST {url}"] if url else []
        if model:
            where.append(f"model {model!r}")
        if attempts:
            where.append(f"attempt {attempts}")
        super().__init__(f"{message} [{', '.join(where)}]" if where else message)
        self.url = url
        self.model = model
        self.attempts = attempts


class LLMHTTPError(LLMError):
    """The server answered an error status; ``body`` is an excerpt of what it said."""

    def __init__(
        self, status: int, body: str, *, url: str = "", model: str = "", attempts: int = 0
    ) -> None:
        super().__init__(f"HTTP {status}: {body}", url=url, model=model, attempts=attempts)
        self.status = status
        self.body = body


class LLMTimeoutError(LLMError):
    """No first token within the first-token timeout, or the stream stalled too long."""


class LLMConnectionError(LLMError):
    """The connection failed (after the retries) or dropped once output had started."""


class LLMResponseError(LLMError):
    """The stream broke the protocol: malformed chunk, bad tool arguments, cut short."""
