"""Cheap checks that veto a semantic neighbour whose meaning differs in ways embeddings blur: a negation, a
number, a date, a name, an opposite verb, the language, or the output format asked for. Each returns the name of
the first difference found, or None; they run only on a candidate neighbour (microseconds per pair)."""

from __future__ import annotations

import re

_WORD = re.compile(r"[A-Za-z\u00c0-\u024f']+|\d+(?:[.,:/-]\d+)*")
_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_NEGATIONS = frozenset(
    [
        "not",
        "no",
        "never",
        "none",
        "nobody",
        "nothing",
        "neither",
        "nor",
        "without",
        "cannot",
        "can't",
        "don't",
        "doesn't",
        "didn't",
        "isn't",
        "aren't",
        "wasn't",
        "weren't",
        "won't",
        "wouldn't",
        "shouldn't",
        "couldn't",
        "mustn't",
        "hasn't",
        "haven't",
        "hadn't",
        "n't",
        "nicht",
        "kein",
        "keine",
        "nie",
        "pas",
        "jamais",
        "sans",
        "nunca",
        "sin",
    ]
)
_MONTHS = frozenset(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "today",
        "tomorrow",
        "yesterday",
        "tonight",
        "weekend",
    ]
)
_OPPOSITES = [
    ("enable", "disable"),
    ("enabled", "disabled"),
    ("on", "off"),
    ("increase", "decrease"),
    ("add", "remove"),
    ("start", "stop"),
    ("open", "close"),
    ("allow", "deny"),
    ("allow", "block"),
    ("encrypt", "decrypt"),
    ("upload", "download"),
    ("import", "export"),
    ("install", "uninstall"),
    ("lock", "unlock"),
    ("true", "false"),
    ("buy", "sell"),
    ("above", "below"),
    ("more", "less"),
    ("max", "min"),
    ("maximum", "minimum"),
    ("high", "low"),
    ("higher", "lower"),
    ("first", "last"),
    ("before", "after"),
    ("input", "output"),
    ("inside", "outside"),
    ("include", "exclude"),
    ("accept", "reject"),
    ("win", "lose"),
    ("pros", "cons"),
    ("advantages", "disadvantages"),
    ("best", "worst"),
    ("largest", "smallest"),
    ("fastest", "slowest"),
    ("cheapest", "most"),
    ("north", "south"),
    ("east", "west"),
    ("left", "right"),
    ("up", "down"),
    ("push", "pull"),
    ("send", "receive"),
    ("create", "delete"),
    ("connect", "disconnect"),
    ("subscribe", "unsubscribe"),
    ("login", "logout"),
    ("encode", "decode"),
    ("compress", "decompress"),
    ("serialize", "deserialize"),
    ("synchronous", "asynchronous"),
    ("sync", "async"),
    ("public", "private"),
    ("client", "server"),
    ("male", "female"),
    ("hot", "cold"),
]
_OPPOSITE: dict[str, set[str]] = {}
for _a, _b in _OPPOSITES:
    _OPPOSITE.setdefault(_a, set()).add(_b)
    _OPPOSITE.setdefault(_b, set()).add(_a)
_FORMATS = {
    "json": "json",
    "yaml": "yaml",
    "xml": "xml",
    "csv": "csv",
    "table": "table",
    "markdown": "markdown",
    "html": "html",
    "bullet": "list",
    "bullets": "list",
    "list": "list",
    "code": "code",
    "python": "python",
    "javascript": "javascript",
    "typescript": "typescript",
    "java": "java",
    "rust": "rust",
    "golang": "go",
    "sql": "sql",
    "bash": "bash",
    "summary": "summary",
    "summarize": "summary",
    "translate": "translate",
    "haiku": "poem",
    "poem": "poem",
    "essay": "essay",
    "email": "email",
    "tweet": "tweet",
    "short": "short",
    "brief": "short",
    "detailed": "long",
    "long": "long",
    "words": "words",
    "sentence": "sentence",
    "sentences": "sentence",
    "paragraph": "paragraph",
    "paragraphs": "paragraph",
}
_STOPWORDS = {
    "en": frozenset(
        [
            "the",
            "and",
            "is",
            "are",
            "of",
            "to",
            "in",
            "what",
            "how",
            "why",
            "which",
            "that",
            "with",
            "for",
            "you",
            "this",
        ]
    ),
    "de": frozenset(
        [
            "der",
            "die",
            "das",
            "und",
            "ist",
            "sind",
            "nicht",
            "ein",
            "eine",
            "wie",
            "was",
            "warum",
            "mit",
            "für",
            "ich",
            "du",
        ]
    ),
    "fr": frozenset(
        [
            "le",
            "la",
            "les",
            "et",
            "est",
            "sont",
            "un",
            "une",
            "des",
            "du",
            "comment",
            "pourquoi",
            "quoi",
            "avec",
            "pour",
            "je",
            "vous",
        ]
    ),
    "es": frozenset(
        [
            "el",
            "la",
            "los",
            "las",
            "y",
            "es",
            "son",
            "un",
            "una",
            "del",
            "cómo",
            "como",
            "por",
            "qué",
            "que",
            "con",
            "para",
            "yo",
            "usted",
        ]
    ),
    "it": frozenset(
        [
            "il",
            "lo",
            "la",
            "gli",
            "le",
            "e",
            "è",
            "sono",
            "un",
            "una",
            "del",
            "come",
            "perché",
            "che",
            "con",
            "per",
            "io",
        ]
    ),
    "pt": frozenset(
        [
            "o",
            "a",
            "os",
            "as",
            "e",
            "é",
            "são",
            "um",
            "uma",
            "do",
            "da",
            "como",
            "por",
            "que",
            "com",
            "para",
            "eu",
            "você",
        ]
    ),
    "nl": frozenset(
        ["de", "het", "een", "en", "is", "zijn", "van", "hoe", "waarom", "wat", "met", "voor", "ik", "je"]
    ),
}


class Features:
    """What the guards compare, extracted once per text."""

    __slots__ = ("formats", "lang", "names", "negations", "numbers", "words")

    def __init__(self, text: str) -> None:
        tokens = _WORD.findall(text)
        lower = [t.lower() for t in tokens]
        self.words = frozenset(lower)
        self.negations = sum(1 for t in lower if t in _NEGATIONS or t.endswith("n't"))
        self.numbers = frozenset(n.replace(",", "") for n in _NUMBER.findall(text)) | (self.words & _MONTHS)
        # capitalised words not at a sentence start: names of people, places, products
        names = set()
        prev = "."
        for raw, t in zip(tokens, lower, strict=True):
            if raw[:1].isupper() and prev not in (".", "!", "?", ":") and t not in _MONTHS and len(t) > 1:
                names.add(t)
            prev = raw[-1] if not raw[-1].isalnum() else ""
        for m in re.finditer(r"[.!?:]\s+([A-Z][a-z]+)", text):
            names.discard(m.group(1).lower())
        self.names = frozenset(names)
        self.formats = frozenset(_FORMATS[t] for t in lower if t in _FORMATS)
        scores = {lang: len(self.words & sw) for lang, sw in _STOPWORDS.items()}
        best = max(scores, key=scores.__getitem__)
        self.lang = best if scores[best] >= 2 else ""


def _opposites(a: Features, b: Features) -> bool:
    return any(_OPPOSITE.get(w, set()) & b.words - a.words for w in a.words - b.words)


def veto(a: Features, b: Features) -> str | None:
    """Why ``b`` must not be answered with ``a``'s answer, or None."""
    if a.lang and b.lang and a.lang != b.lang:
        return "language"
    if (a.negations % 2) != (b.negations % 2) or (a.negations == 0) != (b.negations == 0):
        return "negation"
    if a.numbers != b.numbers:
        return "numbers"
    if a.names != b.names and (a.names - b.names) and (b.names - a.names):
        return "names"
    if a.formats != b.formats:
        return "format"
    if _opposites(a, b):
        return "opposite"
    return None
