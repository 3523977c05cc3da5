"""``POST /v1/moderations`` quality on the held-out half of openai-moderation (the half the content classifier's
training and threshold calibration never saw; split by `compliance_data.py`).

Run: .venv/bin/python -m benches.quality.moderation_eval

Each text goes through the endpoint's own function (``gateway.dialects.moderations.result``: the same scores and
flags the endpoint answers with). Reported: ``flagged`` against "the text carries any label" (a text flagged only
as ``illicit``, which the corpus does not label, counts as a false positive), and each scored category against its
label (``hate`` includes the corpus's hate/threatening, ``violence`` its violence/graphic). Rates with Wilson 95%
intervals, F1 with a bootstrap one.
"""

from __future__ import annotations

from benches.quality import compliance_data as cd
from benches.quality.compliance_eval import prf

from gateway.compliance import models
from gateway.dialects import moderations


def main() -> int:
    if not cd.available():
        raise SystemExit(f"corpora not found at {cd.CORPORA}")
    rows = cd.moderation().test
    thresholds = models.content_thresholds()
    results = [moderations.result(r["prompt"], thresholds) for r in rows]
    print(f"/v1/moderations on openai-moderation's held-out half: {len(rows)} texts")
    prf("flagged", [int(bool(cd.labels(r))) for r in rows], [int(x["flagged"]) for x in results])
    for ours in cd.MODERATION.values():
        name = next(k for k, v in moderations.CATEGORIES.items() if v == ours)
        idx = [i for i, r in enumerate(rows) if cd.labelled(r, ours)]  # the texts labelled for the category
        y = [int(ours in cd.labels(rows[i])) for i in idx]
        prf(f"{name} (of {len(idx)})", y, [int(results[i]["categories"][name]) for i in idx])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
