"""The official JSON-Schema-Test-Suite against gateway._core.JsonSchema.

Runs the required tests (not `optional/`) of draft7, draft2019-09 and draft2020-12 from
../shared/corpora/json-schema-test-suite. Remote refs (http://localhost:1234/...) are served from
the suite's `remotes/` folder through `JsonSchema(resources=...)`: the validator never does I/O.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway._core import JsonSchema

SUITE = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "json-schema-test-suite"
DRAFTS = {"draft7": "7", "draft2019-09": "2019-09", "draft2020-12": "2020-12"}

# (draft, file stem, case description) -> reason. Keep this list short and explained.
EXCLUDED: dict[tuple[str, str, str], str] = {}


def remotes() -> dict[str, str]:
    base = SUITE / "remotes"
    return {
        f"http://localhost:1234/{p.relative_to(base).as_posix()}": p.read_text() for p in base.rglob("*.json")
    }


def cases():
    if not SUITE.exists():
        return
    for folder in DRAFTS:
        for path in sorted((SUITE / "tests" / folder).glob("*.json")):
            for case in json.loads(path.read_text()):
                yield pytest.param(folder, path.stem, case, id=f"{folder}/{path.stem}/{case['description']}")


@pytest.fixture(scope="module")
def resources():
    return remotes()


@pytest.mark.skipif(not SUITE.exists(), reason=f"JSON-Schema-Test-Suite not found at {SUITE}")
@pytest.mark.parametrize(("draft", "stem", "case"), list(cases()))
def test_suite(draft, stem, case, resources):
    reason = EXCLUDED.get((draft, stem, case["description"]))
    if reason:
        pytest.skip(reason)
    schema = JsonSchema(json.dumps(case["schema"]), draft=DRAFTS[draft], resources=resources)
    failures = [
        t["description"] for t in case["tests"] if schema.is_valid(json.dumps(t["data"])) != t["valid"]
    ]
    assert not failures, failures
