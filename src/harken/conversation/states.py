"""The turn state machine of one call, as a transition table.

States::

    STARTING        the call is up; the greeting is being prepared
    LISTENING       nobody speaks; the idle timer runs
    USER_SPEAKING   the caller's turn is open (speech, or a pause the turn detector has not closed)
    THINKING        the caller's turn ended; the agent is preparing its reply (no audio yet)
    AGENT_SPEAKING  the agent's reply is on the wire
    ENDING          the agent hangs up or transfers once its last words are heard
    ENDED           the call is over

Events and the table (anything not listed is ignored and counted in ``ignored``)::

    STARTING        reply        -> THINKING        (the greeting)
    STARTING        user_start   -> USER_SPEAKING   (no greeting, the caller speaks first)
    STARTING        idle_wait    -> LISTENING       (no greeting)
    LISTENING       user_start   -> USER_SPEAKING
    LISTENING       reply        -> THINKING        (idle prompt, DTMF, time limit)
    LISTENING       turn_end     -> THINKING        (a turn begun over the agent's last words)
    USER_SPEAKING   turn_end     -> THINKING        (waiting for the final transcript)
    USER_SPEAKING   reply        -> THINKING        (DTMF entered while speaking)
    USER_SPEAKING   idle_wait    -> LISTENING       (the turn ended empty)
    THINKING        reply        -> THINKING        (the reply task starts)
    THINKING        audio        -> AGENT_SPEAKING  (first agent audio on the wire)
    THINKING        barge_in     -> USER_SPEAKING   (the caller went on: the endpoint was early)
    THINKING        done         -> LISTENING       (nothing to say, or the turn was empty)
    THINKING        idle_wait    -> LISTENING
    AGENT_SPEAKING  done         -> LISTENING       (the reply was heard to the end)
    AGENT_SPEAKING  barge_in     -> USER_SPEAKING   (the caller cut in)
    AGENT_SPEAKING  reply        -> THINKING        (a late caller turn replaces the reply)
    AGENT_SPEAKING  audio        -> AGENT_SPEAKING
    any but ENDED   hangup       -> ENDING
    any             end          -> ENDED

Backchannels ("uh-huh") while the agent speaks fire no event: they never leave AGENT_SPEAKING.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

__all__ = ["TRANSITIONS", "State", "TurnMachine"]


class State(Enum):
    STARTING = "starting"
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"
    AGENT_SPEAKING = "agent_speaking"
    ENDING = "ending"
    ENDED = "ended"


S = State
TRANSITIONS: Final[dict[tuple[State, str], State]] = {
    (S.STARTING, "reply"): S.THINKING,
    (S.STARTING, "user_start"): S.USER_SPEAKING,
    (S.STARTING, "idle_wait"): S.LISTENING,
    (S.LISTENING, "user_start"): S.USER_SPEAKING,
    (S.LISTENING, "reply"): S.THINKING,
    (S.LISTENING, "turn_end"): S.THINKING,
    (S.USER_SPEAKING, "turn_end"): S.THINKING,
    (S.USER_SPEAKING, "reply"): S.THINKING,
    (S.USER_SPEAKING, "idle_wait"): S.LISTENING,
    (S.THINKING, "reply"): S.THINKING,
    (S.THINKING, "audio"): S.AGENT_SPEAKING,
    (S.THINKING, "barge_in"): S.USER_SPEAKING,
    (S.THINKING, "done"): S.LISTENING,
    (S.THINKING, "idle_wait"): S.LISTENING,
    (S.AGENT_SPEAKING, "done"): S.LISTENING,
    (S.AGENT_SPEAKING, "barge_in"): S.USER_SPEAKING,
    (S.AGENT_SPEAKING, "reply"): S.THINKING,
    (S.AGENT_SPEAKING, "audio"): S.AGENT_SPEAKING,
}
for _state in State:
    if _state is not S.ENDED:
        TRANSITIONS[(_state, "hangup")] = S.ENDING
    TRANSITIONS[(_state, "end")] = S.ENDED


class TurnMachine:
    """Current state plus the table; ``fire`` returns whether the event applied."""

    __slots__ = ("history", "ignored", "state")

    def __init__(self, keep: int = 64) -> None:
        self.state = State.STARTING
        self.ignored = 0
        self.history: list[tuple[State, str, State]] = []

    def fire(self, event: str) -> bool:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            self.ignored += 1
            return False
        if len(self.history) >= 64:
            del self.history[:32]
        self.history.append((self.state, event, new))
        self.state = new
        return True

    @property
    def agent_busy(self) -> bool:
        """The agent is preparing or speaking a reply (a caller's speech may barge in)."""
        return self.state in (State.THINKING, State.AGENT_SPEAKING)
