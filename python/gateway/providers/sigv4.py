"""AWS Signature Version 4 for request headers (hashlib + hmac; no AWS SDK at run time).

https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html. Pure: the caller passes the
clock, so a known vector from AWS's documentation reproduces byte for byte. Paths are encoded twice, as every
service but S3 expects (the wire path is already percent-encoded once; the canonical URI encodes it again).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k = _hmac(("AWS4" + secret).encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def canonical_query(query: str) -> str:
    if not query:
        return ""
    pairs = []
    for item in query.split("&"):
        k, _, v = item.partition("=")
        pairs.append((quote(k, safe="-_.~"), quote(v, safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(
    method: str, path: str, query: str, headers: dict[str, str], signed: list[str], payload_hash: str
) -> str:
    uri = quote(path or "/", safe="/~")
    canon_headers = "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed)
    return "\n".join((method, uri, canonical_query(query), canon_headers, ";".join(signed), payload_hash))


def sign(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    service: str,
    session_token: str | None = None,
    when: datetime | None = None,
) -> dict[str, str]:
    """The headers to add to the request (``x-amz-date``, ``authorization``, ``x-amz-security-token``).

    Signs ``host``, every header in ``headers`` (names lower-cased) and the added ``x-amz-*`` ones; ``url`` is
    the exact URL sent (path percent-encoded once).
    """
    t = (when or datetime.now(UTC)).astimezone(UTC)
    amz_date = t.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    parts = urlsplit(url)
    added = {"x-amz-date": amz_date}
    if session_token:
        added["x-amz-security-token"] = session_token
    all_headers = {k.lower(): v for k, v in headers.items()}
    all_headers.setdefault("host", parts.netloc)
    all_headers.update(added)
    signed = sorted(all_headers)
    payload_hash = hashlib.sha256(body).hexdigest()
    creq = canonical_request(method, parts.path, parts.query, all_headers, signed, payload_hash)
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join((ALGORITHM, amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()))
    signature = hmac.new(
        signing_key(secret_key, date, region, service), to_sign.encode(), hashlib.sha256
    ).hexdigest()
    added["authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return added
