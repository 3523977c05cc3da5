"""Write the PII scanner's national numbering-plan table (rust/src/phone_plans.json) from Google's
libphonenumber metadata (PyPI `phonenumbers`, Apache-2.0), for a fixed list of regions.

Why: a phone number written without a country code and without a phone word nearby ("Her line is
0494 92 82 32") is accepted by the Rust scanner only when one of these regions would write that number
with exactly those digit groups (libphonenumber's EXACT_GROUPING test). The check runs in Rust, from
this table, so the request path never calls Python; the script is rerun when `phonenumbers` is upgraded.

Regions: the countries of Faker's locales (the synthetic-data generator most PII benchmarks use,
presidio-research included), fixed here a priori, not chosen by any evaluation.

Per region the table keeps: the national prefix pattern for parsing, the union of the national number
patterns of every number type (libphonenumber's `is_valid_number`), and the national formats (leading
digits, pattern whose capture groups are the written groups, whether the national prefix must be
written). Run: .venv/bin/python scripts/phone_plans.py
"""

from __future__ import annotations

import json
import pathlib
import re

import phonenumbers
from phonenumbers.data import _ALT_NUMBER_FORMATS
from phonenumbers.phonemetadata import PhoneMetadata

OUT = pathlib.Path(__file__).resolve().parents[1] / "rust" / "src" / "phone_plans.json"

# ISO 3166 regions of Faker's locales (faker.config.AVAILABLE_LOCALES, Faker 40), e.g. de_AT -> AT.
REGIONS = [
    "AE",
    "AL",
    "AM",
    "AR",
    "AT",
    "AU",
    "AZ",
    "BA",
    "BD",
    "BE",
    "BG",
    "BH",
    "BR",
    "CA",
    "CH",
    "CL",
    "CN",
    "CO",
    "CY",
    "CZ",
    "DE",
    "DK",
    "DZ",
    "EE",
    "EG",
    "ES",
    "ET",
    "FI",
    "FR",
    "GB",
    "GE",
    "GH",
    "GR",
    "HR",
    "HU",
    "ID",
    "IE",
    "IL",
    "IN",
    "IR",
    "IS",
    "IT",
    "JO",
    "JP",
    "KE",
    "KR",
    "LI",
    "LK",
    "LT",
    "LU",
    "LV",
    "MK",
    "MS",
    "MT",
    "MX",
    "NG",
    "NL",
    "NO",
    "NP",
    "NZ",
    "PH",
    "PK",
    "PL",
    "PS",
    "PT",
    "RO",
    "RU",
    "SA",
    "SE",
    "SI",
    "SK",
    "TH",
    "TR",
    "TW",
    "UA",
    "US",
    "UZ",
    "VE",
    "VN",
    "ZA",
]

TYPES = (
    "fixed_line",
    "mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "personal_number",
    "voip",
    "pager",
    "uan",
    "voicemail",
)


def groups_of(fmt: str) -> list[list[int]]:
    """The written groups of a format string as capture indices: "\\1 \\2\\3" -> [[1], [2, 3]]."""
    return [[int(i) for i in re.findall(r"\\(\d)", part)] for part in re.split(r"[^\\\d]+", fmt) if part]


def national_formats(meta: PhoneMetadata) -> list[PhoneMetadata]:
    """Regions sharing a calling code (CA, MS on +1) format like its main region."""
    if meta.number_format:
        return meta
    return PhoneMetadata.metadata_for_region(phonenumbers.region_code_for_country_code(meta.country_code))


def national(meta: PhoneMetadata) -> list[dict]:
    """National formats: which ones need the national prefix written (libphonenumber's
    is_national_prefix_present_if_required)."""
    out = []
    for f in national_formats(meta).number_format:
        # The rule is resolved already ("0\\1"); one that only wraps the first group ("(\\1)") does
        # not ask for the national prefix (formatting_rule_has_first_group_only).
        rule = f.national_prefix_formatting_rule or ""
        needs = (
            any(c.isdigit() for c in rule.replace("\\1", ""))
            and not f.national_prefix_optional_when_formatting
        )
        out.append({"leading": leading(f), "pattern": f.pattern, "needs_prefix": needs})
    return out


def leading(f) -> str:
    return f.leading_digits_pattern[-1] if f.leading_digits_pattern else ""


def grouping(meta: PhoneMetadata) -> list[dict]:
    """The formats whose groups count as written correctly: the one the number is formatted with
    (international formats if the region has them, as RFC 3966 does) and then the alternate formats."""
    main = national_formats(meta)
    fmts = main.intl_number_format or main.number_format
    out = [
        {"leading": leading(f), "pattern": f.pattern, "groups": groups_of(f.format), "alt": False}
        for f in fmts
    ]
    for f in _ALT_NUMBER_FORMATS.get(meta.country_code, ()):
        out.append({"leading": leading(f), "pattern": f.pattern, "groups": groups_of(f.format), "alt": True})
    return out


def plan(region: str) -> dict:
    meta = PhoneMetadata.metadata_for_region(region)
    valid = [getattr(meta, t).national_number_pattern for t in TYPES if getattr(meta, t) is not None]
    valid = [p for p in valid if p and p != "NA"]
    lengths = sorted(
        {n for t in TYPES if getattr(meta, t) is not None for n in getattr(meta, t).possible_length if n > 0}
        | {n for n in meta.general_desc.possible_length if n > 0}
    )
    return {
        "region": region,
        # national number lengths, to skip the region's regexes for numbers of other lengths
        "lengths": lengths,
        "prefix": meta.national_prefix_for_parsing or meta.national_prefix or "",
        # "9\\1" in libphonenumber's notation -> "9${1}" for Rust's Captures::expand
        "transform": re.sub(r"\\(\d)", r"${\1}", meta.national_prefix_transform_rule or ""),
        "valid": "|".join(f"(?:{p})" for p in valid),
        "national": national(meta),
        "formats": grouping(meta),
    }


def main() -> None:
    missing = [r for r in REGIONS if r not in phonenumbers.SUPPORTED_REGIONS]
    if missing:
        raise SystemExit(f"regions unknown to phonenumbers {phonenumbers.__version__}: {missing}")
    table = {
        "source": f"libphonenumber metadata (Apache-2.0) via PyPI phonenumbers {phonenumbers.__version__}",
        "plans": [plan(r) for r in REGIONS],
    }
    OUT.write_text(json.dumps(table, indent=0, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(REGIONS)} regions)")


if __name__ == "__main__":
    main()
