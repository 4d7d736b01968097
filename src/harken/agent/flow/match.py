"""Intent matching and slot extraction over one utterance.

An intent matches an utterance in one of three ways, tried in this order:

``pattern``
    a regular expression (``re.search``, case-insensitive) over the normalised text (lowercase,
    no punctuation, no apostrophes: ``"whats your address"``). Named groups that name slots fill
    them (``(?P<party_size>\\w+) people``), parsed as if the slot had been asked for.
``keywords``
    keyword phrases found as whole words (``"opening hours"`` needs both words, adjacent);
    ``match: any`` (default) needs one, ``match: all`` every one. The score is the number of
    words matched, so the more specific intent wins.
``fuzzy``
    each example is compared with the utterance by token-set ratio (difflib) over their content
    words (stopwords dropped); the best example's score must reach the threshold (flow
    ``fuzzy_threshold``, default 0.8, or the intent's own). One shared word is weak evidence: when
    it is the only overlap and covers less than half the longer side, the plain string similarity
    is used instead of the token-set score.

An ``exclude`` phrase anywhere vetoes the intent ("cancel my booking" is not "book").

Across intents the best hit wins: a pattern beats keywords beats fuzzy; then the higher score;
then a node's own intents beat global ones; then the one defined first.

Slot extraction (:func:`extract`) looks for every candidate slot in priority order (phone, date,
time, party_size, number, choice, name, yes_no, text); a found value claims its words, so one
utterance can fill several slots without two slots reading the same words. The slot the caller
was just asked for is then parsed leniently from the words left (a bare "six" or "Bob").
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from harken.agent.flow.slots import PARSERS, PRIORITY, yes_no_of
from harken.agent.flow.text import (
    ParseInput,
    SlotMatch,
    SlotSpec,
    Utterance,
    content_tokens,
    find_phrase,
    token_set_ratio,
)

__all__ = ["IntentHit", "Matcher", "best_intent", "extract", "fuzzy_score", "match_intent"]

_RANK = {"pattern": 3, "keywords": 2, "fuzzy": 1}


@dataclass(frozen=True, slots=True)
class Matcher:
    """A compiled intent. ``yes_no`` set makes it the built-in yes (True) or no (False)."""

    name: str
    keywords: tuple[tuple[str, ...], ...] = ()
    mode: str = "any"
    exclude: tuple[tuple[str, ...], ...] = ()
    patterns: tuple[re.Pattern[str], ...] = ()
    examples: tuple[tuple[str, ...], ...] = ()
    threshold: float = 0.8
    yes_no: bool | None = None


@dataclass(frozen=True, slots=True)
class IntentHit:
    """An intent recognised in an utterance, how, and how strongly."""

    name: str
    method: str  # "pattern" | "keywords" | "fuzzy"
    score: float
    local: bool  # one of the node's own intents (not a global one)
    groups: tuple[tuple[str, str], ...] = ()  # named pattern groups that matched

    @property
    def strong(self) -> bool:
        """A pattern or keyword hit (a fuzzy one gives way to an answer to the question)."""
        return self.method != "fuzzy"


def fuzzy_score(said: Sequence[str], example: Sequence[str]) -> float:
    """Token-set similarity of content tokens, discounting a lone shared word (module doc)."""
    a, b = set(said), set(example)
    if not a or not b:
        return 0.0
    score = token_set_ratio(said, example)
    common = a & b
    if len(common) == 1 and len(common) == min(len(a), len(b)) and 1 / max(len(a), len(b)) < 0.5:
        left, right = " ".join(sorted(a)), " ".join(sorted(b))
        score = difflib.SequenceMatcher(None, left, right).ratio()
    return score


def match_intent(m: Matcher, utt: Utterance, *, local: bool) -> IntentHit | None:
    """How ``m`` matches ``utt``, or None (see the module docstring)."""
    toks = utt.toks
    if any(find_phrase(toks, p) is not None for p in m.exclude):
        return None
    if m.yes_no is not None:
        found = yes_no_of(toks, strict=True)
        if found is not None and found.value is m.yes_no:
            return IntentHit(m.name, "keywords", float(found.end - found.start), local)
        return None
    text = utt.norm
    for pattern in m.patterns:
        hit = pattern.search(text)
        if hit is not None:
            groups = tuple((k, v) for k, v in hit.groupdict().items() if v)
            return IntentHit(m.name, "pattern", float(len(hit.group(0))), local, groups)
    if m.keywords:
        found_kw = [p for p in m.keywords if find_phrase(toks, p) is not None]
        if found_kw and (m.mode == "any" or len(found_kw) == len(m.keywords)):
            return IntentHit(m.name, "keywords", float(sum(len(p) for p in found_kw)), local)
    if m.examples:
        said = content_tokens(toks)
        best = max(fuzzy_score(said, ex) for ex in m.examples)
        if best >= m.threshold:
            return IntentHit(m.name, "fuzzy", best, local)
    return None


def best_intent(
    local: Sequence[Matcher], shared: Sequence[Matcher], utt: Utterance
) -> IntentHit | None:
    """The best hit among a node's own matchers and the global ones (module docstring)."""
    best: tuple[tuple[int, float, int, int], IntentHit] | None = None
    ordered = [(m, True) for m in local] + [(m, False) for m in shared]
    for index, (m, is_local) in enumerate(ordered):
        hit = match_intent(m, utt, local=is_local)
        if hit is None:
            continue
        key = (_RANK[hit.method], hit.score, int(is_local), -index)
        if best is None or key > best[0]:
            best = (key, hit)
    return best[1] if best is not None else None


def parse_with(
    spec: SlotSpec, utt: Utterance, today: date, *, lenient: bool, toks: Sequence[str] = ()
) -> SlotMatch | None:
    """Run one slot's parser over ``utt`` (or over ``toks``, a blanked copy of its tokens)."""
    view = tuple(toks) if toks else utt.toks
    raw = tuple(r if v else "" for r, v in zip(utt.raw, view, strict=True))
    inp = ParseInput(utt.text, view, raw, utt.toks, today, lenient)
    return PARSERS[spec.type](inp, spec)


def extract(
    utt: Utterance,
    candidates: Sequence[tuple[str, SlotSpec]],
    asked: tuple[str, SlotSpec] | None,
    today: date,
) -> dict[str, Any]:
    """Slot values found in ``utt``: name -> value, in the order found (module docstring).

    ``candidates`` are looked for with cues only; ``asked`` (the slot just asked for), if not
    found that way, is then parsed leniently from the words no other slot claimed.
    """
    toks = list(utt.toks)
    found: dict[str, Any] = {}
    order = sorted(range(len(candidates)), key=lambda i: (PRIORITY[candidates[i][1].type], i))
    for i in order:
        name, spec = candidates[i]
        if name in found:
            continue
        m = parse_with(spec, utt, today, lenient=False, toks=toks)
        if m is not None:
            found[name] = m.value
            toks[m.start : m.end] = [""] * (m.end - m.start)
    if asked is not None and asked[0] not in found and any(toks):
        m = parse_with(asked[1], utt, today, lenient=True, toks=toks)
        if m is not None:
            found[asked[0]] = m.value
    return found
