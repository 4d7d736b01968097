"""Simulated callers: scripted calls over the Twilio protocol that measure a conversation's seams.

``harken call`` (see :mod:`harken.sim.cli`) dials a running harken, or spawns one, and plays YAML
scenarios (:mod:`harken.sim.script`) with a synthetic caller voice (:mod:`harken.sim.voices`)
through :class:`~harken.testing.twilio.TwilioEmulator`. It hears the agent with an energy
detector on the received and played audio (:mod:`harken.sim.listen`), measures voice-to-voice
latency, barge-in stop latency, false cut-offs, dead air and backchannels handled as
interruptions (:mod:`harken.sim.measure`), checks what the agent said with Whisper
(:mod:`harken.sim.transcribe`), and reports tables, JSON and charts (:mod:`harken.sim.report`).

TEST AND MEASUREMENT TOOL: the runtime never imports it.
"""

from __future__ import annotations

from harken.sim.measure import CallerAct, CallMetrics, analyse
from harken.sim.script import Scenario, builtin_scenarios, load_scenario

__all__ = ["CallMetrics", "CallerAct", "Scenario", "analyse", "builtin_scenarios", "load_scenario"]
