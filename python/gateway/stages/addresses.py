"""A street-address grammar for the PII stage's entity recognition: whole postal addresses, not fragments.

A statistical model tags a city here and a street name there, and what it leaves (the house number, the flat,
the postcode) still reaches the upstream. This grammar finds an address *anchor* and then grows it over the
parts around it, so the whole address becomes one LOCATION span:

- anchors: a house number + name words + a street-type word ("1668 Glyn St", "24 Clarke Avenue"); a
  street-type word first ("Via dei Fiorentini 17", "Rue de Virton 38"); a compound street name + number
  ("Magasinsgatan 7", "Wingertweg 126"); a unit ("Apt. 864", "Suite 501"); military and PO boxes ("PSC 0413,
  Box 8144", "USS Lorenzen", "FPO AE 25990"); capitalised words + number right after an address cue
  ("address is Pagari 18", "located at ...");
- growth: backwards over leading numbers ("28030 Edeby 55", a postcode written first), forwards over what an
  address line continues with, across commas, single line breaks and indentation: units, capitalised words
  (city, region, country, in any script), two-letter state codes, postcodes, "(Greek)"-style qualifiers.
  A blank line, a sentence end, a colon or a lower-case word ends it, except a 2-3 letter region code alone
  before a line end or comma (", ec\n").
- a text written all in lower case is read with its words capitalised (function words excepted), as the
  grammar reads places by their capitals.

Pure regular expressions (the ``regex`` package, for Unicode letter classes); no data, no model.
"""

from __future__ import annotations

import regex

# street-type words (English and the most common continental ones) after the street name
_SUFFIX = (
    r"(?:Street|St|Str|Avenue|Ave|Av|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Square|Sq"
    r"|Terrace|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Trail|Crescent|Close|Row|Gardens|Alley|Plaza|Walk|Mews|Pass"
    r"|Turnpike|Mall|Squares|Crossing|Ridge|Heights|Point|Park|Hill|Green|Grove|View|Vista|Route|Union|Forges"
    r"|Prairie|Port|Island|Islands|Harbor|Harbour|Station|Falls|Fort|Junction|Landing|Loop|Manor|Meadow"
    r"|Meadows|Mill|Mills|Motorway|Oval|Path|Pike|Rapids|Rest|Run|Shoal|Shore|Spring|Springs|Stream|Summit"
    r"|Track|Trace|Valley|Village|Wall|Wells|Bypass|Causeway|Corner|Cove|Creek|Dale|Dam|Estate|Expressway"
    r"|Extension|Ferry|Field|Fields|Flat|Flats|Ford|Forest|Freeway|Garden|Gateway|Glen|Haven|Knoll|Lake"
    r"|Lakes|Lodge|Orchard|Plains|Radial|Ranch|Rue|Via|Strasse|Straße|Weg|Gasse|Platz|Allee|Ring|Damm"
    r"|Ufer|Steig|Markt|Chaussee)"
)
# street-type words before the street name
_PREFIX = (
    r"(?:Rue|Route|Avenue|Av|Boulevard|Bd|Chemin|Impasse|Place|Quai|Allée|Via|Viale|Vicolo|Piazza|Piazzale"
    r"|Corso|Largo|Rua|Avenida|Travessa|Calle|Carrer|Paseo|Plaza|Camino|Ulica|Ul|Aleja|Al|Plac|Straat|Laan"
    r"|Leoforos|Odos|Λεωφόρος|Οδός|Calea|Strada|Bulevardul|Trg|Avda\.|Ul\.|ul\.|u\.|al\.|Al\.|ulica|rua|rúa|Rúa"
    r"|via|rue|calle|trg)"
)
# endings of one-word street names (Scandinavian, Finnish, German, Dutch, Hungarian, Slavic, ...)
_COMPOUND = (
    r"\p{L}+(?:gatan|gata|vägen|väg|vej|veien|vegen|gade|tie|katu|kuja|polku|weg|straße|strasse|str|straat"
    r"|laan|gracht|plein|utca|út|ulica|cesta|ulice|iela|gatve|tee|vegur|braut|stræti|gasse|platz|allee|ring"
    r"|dreef|kade|steeg|vænget|stien|bakken|torget|torg|plass)\.?"
)
_UP = r"[\p{Lu}\p{Lt}]"
_CAP = rf"(?:[dl]['\u2019])?{_UP}[\p{{L}}\p{{M}}'\u2019\-]*\.?"  # a capitalised word, all capitals too ("TYSTBERGA", "St.")
_WORD = rf"(?:[dl]['\u2019])?{_UP}[\p{{L}}\p{{M}}'\u2019\-]*"  # the same without a dot: in a continuation a dot ends the sentence
_NUM = r"\d{1,5}(?:/\d{1,4})?[A-Za-z]?"  # 24, 24B, 10/3 (building/flat)
_JOIN = r"(?:de|da|do|dos|das|del|della|dei|degli|di|du|des|la|le|van|von|der|den|het|ten|op|am|an|im|na|z|u|v|y|e|i|and|&)\b"
_JOINS = set(_JOIN[3:-3].split("|"))
# the joining words that may stand inside a street name ("Jiřího z Poděbrad"), not those that join two things
_PARTICLE = "(?:" + "|".join(sorted(_JOINS - {"and", "&", "y", "e", "i"})) + r")\b"
_WORDS = rf"(?:(?:{_CAP}|{_NUM}|{_JOIN})[ \t]+){{0,4}}"
_UNIT = (
    r"(?i:apt|apartment|apto|suite|ste|unit|flat|room|rm|floor|fl|box|pmb|bldg|building|dept)\.?[ \t]*#?[ \t]*"
    r"\d+[A-Za-z]?"
)
# postcodes other than plain numbers: UK ("SW1A 1AA"), Canada ("B0J 2H0"), and digits joined by a dash
# (US ZIP+4 "12345-6789", Brazil "01310-100", Portugal "1000-001", Poland "00-950", Japan "100-0001")
_POSTCODE = r"(?:[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[A-Z]{2}|[A-Z]\d[A-Z][ \t]?\d[A-Z]\d|\d{2,5}-\d{3,4})\b"
_MILITARY = r"(?i:psc|cmr|unit)[ \t]+\d+,?[ \t]*(?i:box)[ \t]+\d+|(?:USS|USNS|USNV|USCGC)[ \t]+\p{Lu}\p{L}+|(?i:apo|fpo|dpo)[ \t]+(?i:aa|ae|ap)[ \t]+\d{5}"
_PO_BOX = r"P\.?[ \t]?O\.?[ \t]+Box[ \t]+\d+"
_CUE = (
    r"(?i:address(?:[ \t]+is)?|located[ \t]+(?:at|in|on)|lives?[ \t]+(?:at|on|in)|living[ \t]+(?:at|on)"
    r"|moved[ \t]+to|send[ \t]+(?:it[ \t]+)?to|ship(?:ped)?[ \t]+to|deliver(?:ed)?[ \t]+to|mail[ \t]+(?:it[ \t]+)?to"
    r"|is[ \t]+on|it's[ \t]+in|it\s+is\s+in|off[ \t]+at|corner[ \t]+of)[ \t]*:?[ \t]*"
)
# cheap gate for anchors that end in a house number: a number within the next few words
_BEFORE_NUMBER = r"(?=(?:\p{L}[\p{L}\p{M}'\u2019\-]*\.?[ \t]+){1,4}\d)"
_STRONG = r"(?:Street|Avenue|Road|Boulevard|Lane|Drive|Court|Mall|Loop|Plaza|Parkway|Terrace|Crescent)"

# English function words: they end an address, and stay lower case in the capitalised view of a caseless text
FUNCTION_WORDS = frozenset(
    """
    a an the and or but nor so yet for of in on at to from by with about as into onto upon over after before
    is are was were be been am do does did have has had i me my we us our you your he him his she her it its
    they them their this that these those there here what which who whom when where why how not no yes please
    thanks thank can could will would shall should may might must let also just then than too very now all
    any some each every one two new old last next same other more most only own out off up down again
    """.split()  # noqa: SIM905 (a word list reads better as text)
)
_SHORT_FUNCTION = "|".join(sorted(w for w in FUNCTION_WORDS if 2 <= len(w) <= 3))
# a lower-case region code of 2-3 letters alone at the end of a line, before a comma or at the end ("\n, ec\n")
_SHORT_LOWER = rf"(?!(?:{_SHORT_FUNCTION})\b)\p{{Ll}}{{2,3}}(?=[ \t]*(?:\n|,|\.?[ \t]*$))"
ANCHORS = regex.compile(
    "|".join(
        [
            # 770 26 rue des lieutenants Thomazo (before "770 26 rue" is taken for a street-type ending)
            rf"\b(?:{_NUM}[ \t]+){{1,2}}{_PREFIX}[ \t]+(?:\p{{Ll}}+[ \t]+){{1,2}}{_WORDS}{_CAP}",
            rf"\b{_NUM}[ \t]+{_WORDS}{_CAP}[ \t]+{_SUFFIX}\b\.?",  # 24 Clarke Avenue, 1819 St. John Street
            rf"\b{_NUM}[ \t]+{_WORDS}(?i:{_SUFFIX})\b\.?",  # 159 Eleftheriou Venizelou str
            rf"\b{_NUM}[ \t]+(?:\p{{Ll}}+[ \t]+){{1,2}}(?i:street|avenue|road|boulevard|lane|drive)\b",  # 3911 fourth avenue
            rf"\b\d{{3,5}}[ \t]+{_CAP}[ \t]+(?:(?:{_CAP}|{_PARTICLE})[ \t]+){{0,2}}\d{{1,4}}\b",  # 5850 Jana Nerudy 894, 6570 Jiřího z Poděbrad 1874
            rf"(?<![\p{{L}}\d][ \t]?)\b{_WORD}[ \t]+{_STRONG}\b",  # Martinez Mall (no number)
            r"(?i:the[ \t]+)?\bcorner[ \t]+of[ \t]+[^\n!?;:]*?\band\b[^\n!?;:]*?(?=[.!?]?(?:[ \t]*$|[ \t]*\n|[.!?][ \t]))",
            rf"\b{_PREFIX}[ \t]+{_WORDS}{_CAP}[ \t]+{_NUM}\b",  # Via dei Fiorentini 17, Rua Diadema 1903
            rf"\b{_NUM}[ \t]+{_PREFIX}[ \t]+{_WORDS}{_CAP}",  # 29 Rue de Tanger, 9243 Avenue d'Ouchy
            rf"{_BEFORE_NUMBER}(?:{_CAP}[ \t]+){{1,3}}(?:u\.|út|tér|utca|krt\.|körút|kapu|sor|köz)[ \t]+{_NUM}\b\.?",  # Piroska u. 97.
            rf"(?<!\p{{L}}){_BEFORE_NUMBER}(?:{_CAP}[ \t]+){{0,2}}{_COMPOUND}[ \t]+{_NUM}\b",  # Magasinsgatan 7, Rákóczi út 66
            rf"\b{_UNIT}\b",
            rf"\b(?:{_MILITARY}|{_PO_BOX})\b",
            # address is Pagari 18; located at 389 167 King Alexander
            rf"{_CUE}(?P<cued>(?:{_NUM}[ \t]+)*(?:{_CAP}[ \t]+){{1,3}}{_NUM}\b|(?:{_NUM}[ \t]+)+{_CAP}(?:[ \t]+{_CAP}){{0,3}}(?=[ \t]*(?:\n|,|$)))",
        ]
    ),
    regex.V0,
)

# what may continue an address after an anchor, each piece after a separator
_SEP = r"(?=[ \t,\n])[ \t]*,?[ \t]*(?:\n(?:[ \t]*\n[ \t]+)?[ \t]*(?:[>\-*•?]+[ \t]*)?)?,?[ \t]*"
_PIECE = (
    rf"(?:{_UNIT}|{_MILITARY}|{_POSTCODE}|{_NUM}\b|#[ \t]?\d+[A-Za-z]?\b|{_SHORT_LOWER}|(?>(?:{_JOIN}[ \t]+)?{_WORD}(?![\p{{L}}\p{{M}}\d])(?:[ \t]+(?:{_WORD}(?![\p{{L}}\p{{M}}\d])|{_JOIN}))*)(?!:)"
    r"|\(\p{Lu}\p{L}+\))"
)
CONTINUE = regex.compile(rf"(?:{_SEP}{_PIECE})+")
# before an anchor, on the same line: numbers, capitalised words, joining words and short abbreviations
# ("28030 Edeby 55", "Serenade Opus 420 Gairbekov Rapids", "Maarit and Hersnapvej 75", "ul. Słowicza 10")
LEADING = regex.compile(rf"(?:(?<![\w.,\-])(?:{_NUM}|{_WORD}|{_JOIN}|\p{{L}}{{1,4}}\.)[ \t]+)+$")
_LOOK_BACK = 48


def _grow(text: str, s: int, e: int) -> tuple[int, int]:
    m = LEADING.search(text, max(0, s - _LOOK_BACK), s)
    if m is not None and m.end() == s:
        s = m.start()
        while text[s : s + 4].split(" ")[0] in _JOINS:  # never start on "and", "de", ...
            s = text.index(" ", s) + 1
    m = CONTINUE.match(text, e)
    if m is not None:
        e = m.end()
    while e > s and text[e - 1] in " \t\n,":
        e -= 1
    return s, e


_LOWER_WORD = regex.compile(r"(?<![\p{L}\p{M}\d])\p{Ll}[\p{L}\p{M}'\u2019\-]*")


def _capitalise(m: regex.Match[str]) -> str:
    word: str = m[0]
    head = word[0].upper()
    return word if word in FUNCTION_WORDS or len(head) != 1 else head + word[1:]


def capitalised_view(text: str) -> str:
    """A text written all in lower case ("2613 avenida praia 1 suite 463, mohács, hungary") with its words
    capitalised, function words excepted, and of the same length: capitals carry no information there, and
    the grammar reads places by them."""
    return _LOWER_WORD.sub(_capitalise, text)


# the placeholders of values the structured scan masked ("<EMAIL_ADDRESS_1>"), which run before the rules
PLACEHOLDER = regex.compile(r"<[A-Z][A-Z0-9_]*_\d+>")


def _caseless(text: str) -> bool:
    """Written all in lower case, apart from the placeholders of values already masked."""
    return not any(c.isupper() for c in PLACEHOLDER.sub("", text))


def find_addresses(text: str) -> list[tuple[int, int]]:
    """Sorted, non-overlapping (start, end) character spans of street addresses."""
    if _caseless(text):
        text = capitalised_view(text)
    spans: list[tuple[int, int]] = []
    for m in ANCHORS.finditer(text):
        s, e = _grow(text, *(m.span("cued") if m.group("cued") else m.span()))
        if spans and s <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], e))
        else:
            spans.append((s, e))
    return spans
