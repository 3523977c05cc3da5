"""Person names by gazetteer and context, for what the PII stage's statistical model misses.

The gazetteer is the US Census Bureau's 1990 name lists (5,494 first names, 88,799 surnames) as shipped in
the ``names`` package on PyPI (MIT; installed with ``ai-gateway[ner]``), read from the package's files once
per process: nothing is downloaded. Rules (capitalised tokens only, in any script):

- a known first name, optionally followed by a middle initial and up to two more capitalised words
  ("Elizabeth Hanson", "Tom I. Holzman", "Hannah McConnan"); first names that are also everyday English
  words ("Will", "May", "Grace") count only when followed by a known surname;
- with a dictionary (the model's lemmatizer word lists, see ``gateway.stages.ner``), a run of capitalised
  words that are not dictionary words ("Gyala Antall", "Usamov", "Nekolná");
- in a list of capitalised words, the neighbours of a name ("Kónya, Becker and Vasquez");
- a capitalised sequence after a naming cue: "my name is", "call me", "I am", "name:", "Dear", "Hi",
  "called", "named", "signed", "speak to", "ask for", "regards,", "sincerely,", "thanks,", a title (Mr,
  Mrs, Dr, ...).

These rules are weaker than the model: where the model calls the same words a place or an organisation,
the model wins (a census surname list holds "France" and "Box" too).
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Set

import regex

# first names of the census list that are also common English words: on their own they are not names
COMMON_WORDS = frozenset(
    """
    Will May June April August Mark Bill Art Hope Joy Grace Faith Rose Summer Dawn Page Sunday Holly Ivy
    Iris Lily Daisy Violet Pearl Ruby Amber Crystal Jade Angel Star Sky Rain River Brook Forest Hunter
    Chase Carter Cash Price Miles Lane Dale Glen Wade Grant Frank Earnest Ernest Sterling Royal King
    Prince Duke Major Marshall Baker Mason Taylor Cook Young Long White Brown Green Black Gray Grey Don
    Guy Ray Jack Bob Rob Sue Pat Ben Max Sam Eve Al Ed Tom Van Lou Les Ali Kim Lee Jean Tan Son Sol Ana
    Le In An Mae Val Vi Do Dot Else Ha Ma Ok Oh So To Us My Asia China India Georgia Virginia Carolina
    Dakota Jordan Chad Paris Florence Sydney Austin Houston Dallas Denver Phoenix Eugene Lincoln Madison
    Trinity Temple Christian English German Irish French Can Love Happy Merry Gay Rich Sharp Smart Early
    Hale Noble Worth Story Wiley Wood Field Hall Hill Church Bell Case Winter Spring Autumn Harmony
    Destiny Miracle Precious Unique Justice Liberty Honor Patience Prudence Charity Constance Mercy
    Verity Harley Porsche Mercedes Tesla Alexa Siri Cortana Echo Google Apple Amazon Ford Ivory Monday
    Friday Tuesday Thursday Genesis Easter Noel Christmas Dean Pastor Bishop Sister Brother Sonny Buddy
    Rusty Sandy Misty Stormy Sunny Candy Honey Cherry Ginger Olive Hazel Blue Red Rocky Lucky Tiny
    Shorty General Colonel Judge Deacon Dr Mr Mrs Ms Miss Sir Lord Lady Madam Dear Hi Hello Nick Drew
    Sally Cliff Norman Lance Rod Reed Roman Gene Ty Bo Jay Kay Dee Bee
    """.split()  # noqa: SIM905 (a word list reads better as text)
)
_UP = r"[\p{Lu}\p{Lt}]"
# Capitalised (not all capitals); "O'Brien" and "Jean-Luc" are one word, a possessive "'s" is not part of it
_CAP = (
    rf"(?:Mc|Mac|O['\u2019])?{_UP}[\p{{Ll}}\p{{M}}]+(?:(?:['\u2019](?!s\b)|-)\p{{L}}[\p{{Ll}}\p{{M}}]*)*"
    r"(?![\p{L}\d_(\[=<])"  # CamelCase, snake_case and calls are code, not names
)
_INITIAL = r"\p{Lu}\.?"
TOKEN = regex.compile(rf"(?<![\p{{L}}\p{{M}}\d_@.#/\\])({_CAP})")
_CUES = (
    r"(?:(?i:my[ \t]+name[ \t]+is|name[ \t]+is|name[ \t]*:|call[ \t]+me|i[ \t]+am|i'm|this[ \t]+is|named|called"
    r"|signed|speak[ \t]+(?:to|with)|ask[ \t]+for|regards,?|sincerely,?|thanks,?|cheers,?)[ \t]*\n?"
    r"|Dear|Hi|Hello|Hey|Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame)"
)
_TITLES = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame)\b"
AFTER_CUE = regex.compile(
    rf"(?<![\p{{L}}])(?:{_CUES})\.?[ \t]+(?!{_TITLES})({_CAP}(?:[ \t]+(?:{_INITIAL}[ \t]+)?{_CAP}){{0,2}})"
)


@functools.cache
def gazetteer() -> tuple[frozenset[str], frozenset[str]]:
    """(first names, surnames), capitalised; from the ``names`` package's census files."""
    root = importlib.resources.files("names")

    def read(name: str) -> frozenset[str]:
        text = (root / name).read_text(encoding="ascii")
        return frozenset(line.split()[0].capitalize() for line in text.splitlines() if line.strip())

    return read("dist.female.first") | read("dist.male.first"), read("dist.all.last")


def available() -> bool:
    try:
        gazetteer()
    except (ModuleNotFoundError, FileNotFoundError):
        return False
    return True


_AND = regex.compile(r"[ \t]*(?:,[ \t]*(?:and[ \t]+)?|[ \t]+(?:and|&|or)[ \t]+)")


def coordinated(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Names listed next to a known name: in "Kónya, Becker and Vasquez" or "Torpy and Salinas", once one
    item is a name the single capitalised words linked to it by a comma, "and", "&" or "or" are names too.
    Returns only the added spans."""
    tokens = [(m.start(1), m.end(1), m.group(1)) for m in TOKEN.finditer(text)]
    found = set(spans)
    starts = {s for s, _ in spans}
    ends = {e for _, e in spans}
    changed = True
    while changed:
        changed = False
        for k, (s, e, _) in enumerate(tokens):
            if (s, e) in found or any(fs <= s < fe for fs, fe in found):
                continue
            nxt = tokens[k + 1] if k + 1 < len(tokens) else None
            prv = tokens[k - 1] if k > 0 else None
            linked = (
                nxt is not None and nxt[0] in starts and _AND.fullmatch(text, e, nxt[0]) is not None
            ) or (prv is not None and prv[1] in ends and _AND.fullmatch(text, prv[1], s) is not None)
            if linked:
                found.add((s, e))
                starts.add(s)
                ends.add(e)
                changed = True
    return sorted(found - set(spans))


_INFLECTIONS = ("s", "es", "ed", "d", "ing", "ly", "'s", "\u2019s", "n't", "'t", "'ll", "'re", "'ve", "'m")


def _unknown(word: str, lexicon: Set[str]) -> bool:
    """Not a dictionary word, nor one with a regular ending ("Tales", "Helped", "Celebrating", "Don't")."""
    w = word.lower()
    if w in lexicon:
        return False
    for end in _INFLECTIONS:
        if w.endswith(end) and len(w) > len(end) + 1:
            stem = w[: -len(end)]
            if (
                stem in lexicon
                or stem + "e" in lexicon
                or (end == "ing" and stem[-1:] == stem[-2:-1] and stem[:-1] in lexicon)
            ):
                return False
    return True


def find_names(text: str, lexicon: Set[str] | None = None) -> list[tuple[int, int]]:
    """Sorted, non-overlapping (start, end) character spans of person names. With ``lexicon`` (the
    dictionary words of the language, lower case), a run of capitalised words none of which is a dictionary
    word ("Gyala Antall", "Usamov") is taken for a name too."""
    first, last = gazetteer()
    spans: list[tuple[int, int]] = []
    tokens = [(m.start(1), m.end(1), m.group(1)) for m in TOKEN.finditer(text)]
    i = 0
    while i < len(tokens):
        s, e, word = tokens[i]
        j = i
        # extend over an optional middle initial and up to two capitalised words that follow directly
        k, end, following = i + 1, e, 0
        while k < len(tokens) and following < 2:
            gap = text[end : tokens[k][0]]
            if not regex.fullmatch(rf"[ \t]+(?:{_INITIAL}[ \t]+)?", gap):
                break
            end, j, following, k = tokens[k][1], k, following + 1, k + 1
        known_first = word in first and word not in COMMON_WORDS
        surname_next = j > i and tokens[i + 1][2] in last
        run = [t[2] for t in tokens[i : j + 1]]
        unknown = lexicon is not None and all(
            _unknown(w, lexicon) or (w in first and w not in COMMON_WORDS) for w in run
        )
        if known_first or (word in first and surname_next) or unknown:
            spans.append((s, end))
            i = j + 1
        else:
            i += 1
    for m in AFTER_CUE.finditer(text, overlapped=True):
        spans.append(m.span(1))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if merged and s < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged
