"""``gateway admin …``: a small client of a running gateway's admin API (``admin.py``).

    gateway admin [--url URL] [--key ADMIN_KEY] keys create --tenant T [--team] [--name] [--models M ...]
    gateway admin keys list [--tenant T] | keys revoke KEY_ID
    gateway admin budget set SCOPE ID --usd X [--period day|month|lifetime] [--window-s N] [--soft-usd X]
                              [--max-request-usd X] [--downgrade-to GROUP] [--tenant T]
    gateway admin limit set SCOPE ID [--rpm N] [--tpm N] [--window-s S] [--tenant T]
    gateway admin budget|limit rm SCOPE ID [--tenant T] | budget|limit list
    gateway admin spend SCOPE ID [--tenant T]
    gateway admin approve KEY_ID MAX_USD [--ttl-s S]
    gateway admin stats
    gateway admin alerts [--state firing|resolved]
    gateway admin costs [--group-by tenant,team,tag,agent,model] [--from T] [--to T]
                        [--granularity hour|day|total] [--tenant T] [--csv]

``--url`` defaults to ``$GATEWAY_URL`` (else http://127.0.0.1:4000), ``--key`` to ``$GATEWAY_ADMIN_KEY``. Prints the
JSON answer; exits 1 with the error on stderr when the gateway refuses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode

Call = tuple[str, str, dict[str, Any] | None]


def call(url: str, key: str, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
    req = urllib.request.Request(
        url.rstrip("/") + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
            if not r.headers.get("content-type", "").startswith("application/json"):
                return r.status, raw.decode()  # an export (CSV) comes back as text
            return r.status, json.loads(raw)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _q(**params: Any) -> str:
    params = {k: v for k, v in params.items() if v is not None}
    return "?" + urlencode(params) if params else ""


def _rule(a: argparse.Namespace, fields: tuple[str, ...]) -> dict[str, Any]:
    return {f: getattr(a, f) for f in fields if getattr(a, f, None) is not None}


def to_call(a: argparse.Namespace) -> Call:
    """The HTTP call a parsed command line stands for (pure: tested without a gateway)."""
    if a.cmd == "keys":
        if a.action == "create":
            return (
                "POST",
                "/admin/keys",
                {"tenant": a.tenant, "team": a.team, "name": a.name, "models": a.models or []},
            )
        if a.action == "list":
            return "GET", "/admin/keys" + _q(tenant=a.tenant), None
        return "DELETE", f"/admin/keys/{quote(a.key_id, safe='')}", None
    if a.cmd in ("budget", "limit"):
        base = f"/admin/{a.cmd}s"
        if a.action == "list":
            return "GET", base, None
        path = f"{base}/{a.scope}/{quote(a.id, safe='/')}" + _q(tenant=a.tenant)
        if a.action == "rm":
            return "DELETE", path, None
        if a.cmd == "budget":
            fields = ("usd", "period", "window_s", "soft_usd", "max_request_usd", "downgrade_to")
            rule = _rule(a, fields)
            if a.downgrade_to:
                rule["on_exceed"] = "downgrade"
            return "PUT", path, rule
        return "PUT", path, _rule(a, ("rpm", "tpm", "window_s"))
    if a.cmd == "spend":
        return "GET", "/admin/spend" + _q(scope=a.scope, id=a.id, tenant=a.tenant), None
    if a.cmd == "alerts":
        return "GET", "/admin/alerts" + _q(state=a.state), None
    if a.cmd == "costs":
        fmt = "csv" if a.csv else None
        q = _q(group_by=a.group_by, to=a.to, granularity=a.granularity, tenant=a.tenant, format=fmt)
        if a.since is not None:
            q += ("&" if q else "?") + urlencode({"from": a.since})
        return "GET", "/admin/costs" + q, None
    if a.cmd == "approve":
        return "POST", "/admin/approvals", _rule(a, ("key_id", "max_usd", "ttl_s"))
    if a.cmd == "cooldowns":
        return (
            "DELETE",
            "/admin/cooldowns" + (f"/{quote(a.deployment, safe='')}" if a.deployment else ""),
            None,
        )
    return "GET", "/admin/stats", None


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gateway admin", description="Call the admin API of a running gateway.")
    ap.add_argument("--url", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:4000"))
    ap.add_argument(
        "--key", default=os.environ.get("GATEWAY_ADMIN_KEY", ""), help="the admin key (admin.key)"
    )
    sub = ap.add_subparsers(dest="cmd", required=True)

    k = sub.add_parser("keys", help="create, list or revoke gateway keys").add_subparsers(
        dest="action", required=True
    )
    x = k.add_parser("create")
    x.add_argument("--tenant", required=True)
    x.add_argument("--team")
    x.add_argument("--name")
    x.add_argument("--models", nargs="*")
    k.add_parser("list").add_argument("--tenant")
    k.add_parser("revoke").add_argument("key_id")

    for what in ("budget", "limit"):
        w = sub.add_parser(what, help=f"set, remove or list run-time {what}s").add_subparsers(
            dest="action", required=True
        )
        w.add_parser("list")
        for action in ("set", "rm"):
            x = w.add_parser(action)
            x.add_argument("scope")
            x.add_argument("id", help="'*' for every id of the scope")
            x.add_argument("--tenant", help="for user, tag, agent, agent_run ids")
            if action == "rm":
                continue
            if what == "budget":
                x.add_argument("--usd", type=float, required=True)
                x.add_argument("--period", choices=["day", "month", "lifetime"])
                x.add_argument("--window-s", dest="window_s", type=int, help="a rolling window instead")
                x.add_argument("--soft-usd", dest="soft_usd", type=float)
                x.add_argument("--max-request-usd", dest="max_request_usd", type=float)
                x.add_argument(
                    "--downgrade-to", dest="downgrade_to", help="over budget: use this group instead"
                )
            else:
                x.add_argument("--rpm", type=int)
                x.add_argument("--tpm", type=int)
                x.add_argument("--window-s", dest="window_s", type=float)

    x = sub.add_parser("spend", help="spend, limit and what remains for a scope")
    x.add_argument("scope")
    x.add_argument("id")
    x.add_argument("--tenant")
    x = sub.add_parser("approve", help="issue a single-use approval token for one expensive request")
    x.add_argument("key_id")
    x.add_argument("max_usd", type=float)
    x.add_argument("--ttl-s", dest="ttl_s", type=float)
    sub.add_parser("stats", help="queue depth and other contract counters over every worker")
    x = sub.add_parser("cooldowns", help="end deployments' cooldowns and open circuits (all, or one)")
    x.add_argument("deployment", nargs="?")
    x = sub.add_parser("alerts", help="alerts raised by the detector, newest first")
    x.add_argument("--state", choices=["firing", "resolved"])
    x = sub.add_parser("costs", help="spend, tokens and requests per period and group, from the records")
    x.add_argument("--group-by", dest="group_by", default="tenant", help="comma-separated: tenant,team,tag,…")
    x.add_argument(
        "--from", dest="since", help="unix seconds or ISO 8601 (default: 30 days, or 1 day by hour)"
    )
    x.add_argument("--to", help="unix seconds or ISO 8601 (default: now)")
    x.add_argument("--granularity", choices=["hour", "day", "total"])
    x.add_argument("--tenant")
    x.add_argument("--csv", action="store_true", help="CSV instead of JSON")
    return ap


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    method, path, body = to_call(a)
    try:
        status, answer = call(a.url, a.key, method, path, body)
    except OSError as e:
        print(f"cannot reach the gateway at {a.url}: {e}", file=sys.stderr)
        return 2
    if status >= 400:
        print(json.dumps(answer, indent=2), file=sys.stderr)
        return 1
    print(
        answer if isinstance(answer, str) else json.dumps(answer, indent=2),
        end="" if isinstance(answer, str) else "\n",
    )
    return 0
