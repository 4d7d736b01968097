// harken playground: a browser call to the agent over WebRTC.
//
// Signalling is one POST (/webrtc/offer) with every ICE candidate in the offer. The agent's
// events arrive on a negotiated data channel (id 0): transcripts, its state, per-turn latency.
// The page also measures, on its own, the time from your voice stopping (microphone level) to
// the agent's voice arriving (received level): the "In the browser" column.
//
// window.harken exposes what the page knows (events, levels, measurements) for tests.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const QUIET_DB = -50; // below this a 20 ms frame counts as silence
  const METER_MS = 20;
  const STATE_TEXT = {
    idle: "Ready when you are",
    starting: "Connecting the agent…",
    listening: "Listening",
    user_speaking: "You're speaking",
    thinking: "Thinking…",
    agent_speaking: "Speaking",
    ending: "Wrapping up",
    ended: "Call ended",
  };

  const ui = {
    button: $("connect"),
    label: $("connect-label"),
    status: $("status"),
    callId: $("call-id"),
    banner: $("banner"),
    orb: $("orb"),
    state: $("agent-state"),
    states: document.querySelectorAll(".states li"),
    micLevel: $("mic-level"),
    micDb: $("mic-db"),
    agentLevel: $("agent-level"),
    agentDb: $("agent-db"),
    transcript: $("transcript"),
    empty: $("transcript-empty"),
    latency: $("latency-body"),
    statLast: $("stat-last"),
    statMedian: $("stat-median"),
    statBest: $("stat-best"),
    audio: $("remote-audio"),
  };

  // Everything the page knows, for people with devtools open and for tests.
  const page = (window.harken = {
    status: "idle",
    callId: null,
    state: "idle",
    events: [],
    levels: { mic: -100, agent: -100, micPeak: -100, agentPeak: -100 },
    agentAudibleMs: 0, // how long received agent audio was above the quiet level
    browserLatency: [], // {at, ms}: your voice stopped -> agent voice arrived, measured here
    turns: {}, // reply id -> latency event (+ browser_ms)
  });

  let pc = null;
  let channel = null;
  let micStream = null;
  let audioCtx = null;
  let micAnalyser = null;
  let agentAnalyser = null;
  let meterTimer = null;
  let statsTimer = null;
  let lastJitter = null;
  const callerTurns = new Map(); // turn -> element
  const agentReplies = new Map(); // reply id -> element
  const rows = new Map(); // reply id -> table row
  // voice-to-voice as heard here
  let micLoudAt = 0;
  let agentLoudAt = 0;
  let agentQuietSince = 0;
  let onsetRef = 0;

  // --- connection ------------------------------------------------------------------------

  async function connect() {
    hideBanner();
    if (!window.isSecureContext || !navigator.mediaDevices) {
      showBanner(
        "The microphone needs a secure page: open this on http://localhost, or serve it over " +
          "HTTPS (see docs/webrtc.md)."
      );
      return;
    }
    setStatus("connecting", "Connecting…");
    ui.button.disabled = true;
    try {
      const config = await (await fetch("/webrtc/config")).json();
      micStream = await navigator.mediaDevices.getUserMedia({
        audio: {
          echoCancellation: true,
          noiseSuppression: true,
          autoGainControl: true,
          channelCount: 1,
        },
      });
      audioCtx = new AudioContext();
      await audioCtx.resume();
      micAnalyser = analyser(micStream);

      pc = new RTCPeerConnection({
        iceServers: (config.ice_servers || []).map((url) => ({ urls: url })),
      });
      for (const track of micStream.getAudioTracks()) pc.addTrack(track, micStream);
      channel = pc.createDataChannel("events", { negotiated: true, id: 0 });
      channel.onmessage = (msg) => onEvent(JSON.parse(msg.data));
      pc.ontrack = (ev) => {
        const stream = ev.streams[0] || new MediaStream([ev.track]);
        ui.audio.srcObject = stream; // Chrome only feeds WebAudio from a played stream
        ui.audio.play().catch(() => {});
        agentAnalyser = analyser(stream);
      };
      pc.onconnectionstatechange = () => {
        const s = pc && pc.connectionState;
        if (s === "connected") setStatus("connected", "Connected");
        else if (s === "failed") {
          showBanner("The connection failed (no network path between this browser and the server).");
          disconnect("failed");
        } else if (s === "disconnected") setStatus("connecting", "Reconnecting…");
      };

      await pc.setLocalDescription(await pc.createOffer());
      await gathered(pc, 2500);
      const resp = await fetch("/webrtc/offer", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
      });
      const answer = await resp.json();
      if (!resp.ok) throw new Error(answer.error || `the server answered ${resp.status}`);
      page.callId = answer.call_id;
      ui.callId.textContent = answer.call_id;
      await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
      setLive(true);
      meterTimer = setInterval(meter, METER_MS);
      statsTimer = setInterval(reportStats, 1000);
      clearTranscript();
    } catch (err) {
      showBanner(`Could not connect: ${err.message || err}`);
      disconnect("error");
    } finally {
      ui.button.disabled = false;
    }
  }

  function disconnect(reason) {
    if (channel && channel.readyState === "open") {
      try {
        channel.send(JSON.stringify({ type: "hangup" }));
      } catch (_) {
        /* closing anyway */
      }
    }
    clearInterval(meterTimer);
    clearInterval(statsTimer);
    meterTimer = statsTimer = null;
    if (pc) pc.close();
    pc = channel = null;
    if (micStream) micStream.getTracks().forEach((t) => t.stop());
    micStream = null;
    if (audioCtx) audioCtx.close();
    audioCtx = micAnalyser = agentAnalyser = null;
    ui.audio.srcObject = null;
    setLive(false);
    setLevel(ui.micLevel, ui.micDb, -100);
    setLevel(ui.agentLevel, ui.agentDb, -100);
    if (reason !== "failed" && reason !== "error") setStatus("idle", "Not connected");
    else setStatus("failed", "Disconnected");
    setState(reason === "agent" ? "ended" : "idle");
  }

  function gathered(conn, timeoutMs) {
    if (conn.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      conn.addEventListener("icegatheringstatechange", () => {
        if (conn.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  function analyser(stream) {
    const node = audioCtx.createAnalyser();
    node.fftSize = 1024;
    audioCtx.createMediaStreamSource(stream).connect(node);
    return { node, buf: new Float32Array(node.fftSize) };
  }

  function levelDb(a) {
    if (!a) return -100;
    a.node.getFloatTimeDomainData(a.buf);
    let sum = 0;
    for (let i = 0; i < a.buf.length; i++) sum += a.buf[i] * a.buf[i];
    const rms = Math.sqrt(sum / a.buf.length);
    return rms > 0 ? Math.max(-100, 20 * Math.log10(rms)) : -100;
  }

  // --- levels and the browser's own voice-to-voice ----------------------------------------

  function meter() {
    const now = performance.now();
    const mic = levelDb(micAnalyser);
    const agent = levelDb(agentAnalyser);
    const L = page.levels;
    L.mic = mic;
    L.agent = agent;
    L.micPeak = Math.max(L.micPeak, mic);
    L.agentPeak = Math.max(L.agentPeak, agent);
    setLevel(ui.micLevel, ui.micDb, mic);
    setLevel(ui.agentLevel, ui.agentDb, agent);
    ui.orb.style.setProperty("--level", String(Math.max(0, (Math.max(mic, agent) + 60) / 60)));

    if (mic > QUIET_DB) micLoudAt = now;
    if (agent > QUIET_DB) {
      page.agentAudibleMs += METER_MS;
      const onset = now - agentLoudAt > 350; // the agent was quiet: a new utterance begins
      agentLoudAt = now;
      // a reply to you: you spoke since the last reply began, and you are quiet now
      if (onset && micLoudAt > onsetRef && now - micLoudAt > 3 * METER_MS) {
        const ms = Math.round(now - micLoudAt);
        page.browserLatency.push({ at: Date.now(), ms });
        attachBrowserLatency(ms);
      }
      if (onset) onsetRef = now;
    } else if (agentQuietSince < agentLoudAt) {
      agentQuietSince = now;
    }
  }

  function setLevel(fill, label, db) {
    const pct = Math.max(0, Math.min(100, ((db + 70) / 70) * 100));
    fill.style.width = `${pct.toFixed(1)}%`;
    label.textContent = db <= -99 ? "–" : `${db.toFixed(0)} dBFS`;
  }

  // What the page's jitter buffer adds goes back to the server: it knows when you heard the
  // end of an utterance (its "drained" playback truth) only as well as it knows this delay.
  async function reportStats() {
    if (!pc || !channel || channel.readyState !== "open") return;
    const stats = await pc.getStats();
    let rtt = null;
    stats.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio" && s.jitterBufferEmittedCount) {
        const prev = lastJitter;
        lastJitter = { delay: s.jitterBufferDelay, count: s.jitterBufferEmittedCount };
        if (prev && lastJitter.count > prev.count) {
          page.jitterBufferMs =
            ((lastJitter.delay - prev.delay) / (lastJitter.count - prev.count)) * 1000;
        }
      }
      if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
        rtt = s.currentRoundTripTime * 1000;
      }
    });
    if (page.jitterBufferMs !== undefined) {
      const sink = page.jitterBufferMs + (rtt !== null ? rtt / 2 : 0) + 10; // + playout
      channel.send(JSON.stringify({ type: "stats", sink_delay_ms: Math.round(sink) }));
    }
  }

  // --- events from the agent --------------------------------------------------------------

  function onEvent(ev) {
    page.events.push(ev);
    switch (ev.type) {
      case "call":
        note("Call started");
        break;
      case "state":
        setState(ev.state);
        break;
      case "caller":
        callerText(ev);
        break;
      case "agent":
        agentText(ev);
        break;
      case "latency":
        latencyRow(ev);
        break;
      case "bye":
        note("The agent hung up");
        setTimeout(() => disconnect("agent"), 300);
        break;
      case "end":
        if (pc) setTimeout(() => disconnect("agent"), 300);
        break;
      default:
        break;
    }
  }

  function setState(state) {
    page.state = state;
    ui.orb.dataset.state = state;
    ui.state.dataset.state = state;
    ui.state.textContent = STATE_TEXT[state] || state;
    ui.states.forEach((li) => li.classList.toggle("on", li.dataset.state === state));
  }

  function clearTranscript() {
    ui.transcript.querySelectorAll(".turn, .system-note").forEach((n) => n.remove());
    ui.empty.hidden = true;
    callerTurns.clear();
    agentReplies.clear();
  }

  function bubble(cls, who) {
    const el = document.createElement("div");
    el.className = `turn ${cls}`;
    const name = document.createElement("span");
    name.className = "who";
    name.textContent = who;
    const body = document.createElement("div");
    body.className = "bubble";
    el.append(name, body);
    ui.transcript.append(el);
    return el;
  }

  function scrollDown() {
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  function note(text) {
    const el = document.createElement("div");
    el.className = "system-note";
    el.textContent = text;
    ui.transcript.append(el);
    scrollDown();
  }

  function callerText(ev) {
    let el = callerTurns.get(ev.turn);
    if (!ev.text) {
      if (el && ev.final) el.remove();
      return;
    }
    if (!el) {
      el = bubble("caller", "You");
      callerTurns.set(ev.turn, el);
    }
    el.classList.toggle("interim", !ev.final);
    el.querySelector(".bubble").textContent = ev.text;
    el.dataset.final = ev.final ? "1" : "0";
    scrollDown();
  }

  function agentText(ev) {
    let el = agentReplies.get(ev.reply);
    if (!el) {
      el = bubble("agent pending", ev.kind === "greeting" ? "Agent · greeting" : "Agent");
      agentReplies.set(ev.reply, el);
    }
    el.classList.toggle("pending", !ev.audible && !ev.done);
    const body = el.querySelector(".bubble");
    body.textContent = "";
    if (ev.done && ev.heard !== null && ev.heard !== ev.text) {
      // the caller heard the first words only: strike the rest through
      const words = ev.text.split(/\s+/);
      const n = ev.heard.trim() ? ev.heard.trim().split(/\s+/).length : 0;
      body.append(document.createTextNode(words.slice(0, n).join(" ")));
      const cut = document.createElement("del");
      cut.textContent = (n ? " " : "") + words.slice(n).join(" ");
      cut.title = "cut off: never heard";
      body.append(cut);
      setTag(el, "cut off", "cut");
    } else {
      body.textContent = ev.text;
      if (ev.done && ev.interrupted) setTag(el, "interrupted", "cut");
    }
    el.dataset.done = ev.done ? "1" : "0";
    scrollDown();
  }

  function setTag(el, text, cls) {
    let tag = el.querySelector(".tag");
    if (!tag) {
      tag = document.createElement("span");
      el.append(tag);
    }
    tag.className = `tag ${cls}`;
    tag.textContent = text;
  }

  // --- latency ----------------------------------------------------------------------------

  const SEGMENTS = ["silence", "endpoint", "stt_final", "brain", "tts", "send"];
  const LABELS = {
    silence: "silence before end of speech",
    endpoint: "turn detection",
    stt_final: "final transcript",
    brain: "agent",
    tts: "speech synthesis",
    send: "send",
  };
  const fmt = (ms) => (ms === null || ms === undefined ? "–" : `${Math.round(ms)} ms`);

  function latencyRow(ev) {
    if (ev.kind !== "turn") return; // greetings and prompts answer no one
    const known = page.turns[ev.reply];
    page.turns[ev.reply] = Object.assign(known || {}, ev);
    const entry = page.turns[ev.reply];
    if (entry.browser_ms === undefined && pendingBrowser && Date.now() - pendingBrowser.at < 1500) {
      entry.browser_ms = pendingBrowser.ms;
      pendingBrowser = null;
    }
    drawRow(ev.reply);
    summary();
  }

  let pendingBrowser = null;

  function attachBrowserLatency(ms) {
    // to the newest turn, if its first audio left the server moments ago; else to the next
    const ids = Object.keys(page.turns).map(Number);
    const id = ids.length ? Math.max(...ids) : null;
    const t = id === null ? null : page.turns[id];
    if (t && t.browser_ms === undefined && Date.now() - (t.receivedAt || 0) < 1500) {
      t.browser_ms = ms;
      drawRow(id);
      summary();
      return;
    }
    pendingBrowser = { ms, at: Date.now() };
  }

  function drawRow(id) {
    const t = page.turns[id];
    if (!t.receivedAt) t.receivedAt = Date.now();
    const placeholder = ui.latency.querySelector(".placeholder");
    if (placeholder) placeholder.remove();
    let tr = rows.get(id);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.reply = String(id);
      ui.latency.prepend(tr);
      rows.set(id, tr);
    }
    const turnNo = [...rows.keys()].sort((a, b) => a - b).indexOf(id) + 1;
    const cls = (ms) => (ms === null || ms === undefined ? "" : ms <= 1000 ? "good" : "slow");
    tr.innerHTML = "";
    const cells = [
      [String(turnNo), "num"],
      [t.user_text || "", "said"],
      [fmt(t.browser_ms), `num ${cls(t.browser_ms)}`],
      [fmt(t.caller_end_to_audio_ms), `num ${cls(t.caller_end_to_audio_ms)}`],
      [fmt(t.voice_to_voice_ms), "num"],
    ];
    for (const [text, c] of cells) {
      const td = document.createElement("td");
      td.className = c;
      td.textContent = text;
      if (c === "said") td.title = text;
      tr.append(td);
    }
    const chart = document.createElement("td");
    chart.append(bar(t.breakdown || {}));
    tr.append(chart);
  }

  function bar(parts) {
    const el = document.createElement("div");
    el.className = "bar";
    const total = SEGMENTS.reduce((s, k) => s + (parts[k] || 0), 0);
    const scale = Math.max(total, 1200);
    const tips = [];
    for (const k of SEGMENTS) {
      const ms = parts[k];
      if (!ms) continue;
      const seg = document.createElement("span");
      seg.className = `seg-${k}`;
      seg.style.width = `${((ms / scale) * 100).toFixed(2)}%`;
      seg.title = `${LABELS[k]}: ${Math.round(ms)} ms`;
      tips.push(seg.title);
      el.append(seg);
    }
    el.title = tips.join("\n");
    return el;
  }

  function summary() {
    const values = Object.values(page.turns)
      .map((t) => (t.browser_ms !== undefined ? t.browser_ms : t.caller_end_to_audio_ms))
      .filter((v) => v !== null && v !== undefined);
    if (!values.length) return;
    const sorted = [...values].sort((a, b) => a - b);
    ui.statLast.textContent = fmt(values[values.length - 1]);
    ui.statMedian.textContent = fmt(sorted[Math.floor(sorted.length / 2)]);
    ui.statBest.textContent = fmt(sorted[0]);
  }

  // --- chrome -----------------------------------------------------------------------------

  function setStatus(status, text) {
    page.status = status;
    ui.status.dataset.status = status;
    ui.status.textContent = text;
  }

  function setLive(live) {
    ui.button.classList.toggle("live", live);
    ui.label.textContent = live ? "Hang up" : "Start talking";
    if (!live) ui.callId.textContent = "";
  }

  function showBanner(text) {
    ui.banner.textContent = text;
    ui.banner.hidden = false;
  }

  function hideBanner() {
    ui.banner.hidden = true;
  }

  ui.button.addEventListener("click", () => (pc ? disconnect("caller") : connect()));
  window.addEventListener("beforeunload", () => pc && disconnect("caller"));
  setState("idle");
})();
