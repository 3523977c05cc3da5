"""``gateway serve | demo | simulate | keys | admin | bench | report | check-config``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from gateway.config import ConfigError, load_config
from gateway.state import warn_if_per_worker
from gateway.store.sqlite import SqliteStore

DEMO_KEY = "gw-demo-key-change-me"
TRIAL_KEY = "gw-trial-key-change-me"
DASHBOARD_KEY = "gw-dashboard-key-change-me"


def serve(config: str, host: str | None, port: int | None, workers: int | None) -> int:
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings

    from gateway.server import GatewayServer, read_config

    cfg_path = str(Path(config).resolve())
    try:
        text, cfg = read_config(cfg_path)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    from gateway.observability.metrics import prepare_dir

    metrics_dir = prepare_dir(
        cfg, port or cfg.server.port
    )  # the workers' shared metrics, fresh for this server
    if metrics_dir and cfg.observability.metrics.port:
        from gateway.observability.metrics import serve_port

        serve_port(cfg, metrics_dir, host or cfg.server.host)
    SqliteStore(cfg.store.sqlite_path).close()  # create the schema once, before the workers race for it
    n = workers or cfg.server.workers
    warn_if_per_worker(cfg, n)
    GatewayServer(
        cfg_path,
        text,
        cfg,
        address=host or cfg.server.host,
        port=port or cfg.server.port,
        interface=Interfaces.RSGI,
        workers=n,
        loop=Loops.uvloop,
        log_access=False,
        backlog=2048,
        # Granian (hyper) cuts a connection whose request headers are not complete in time; bodies: gateway/edge.py
        http1_settings=HTTP1Settings(header_read_timeout=int(cfg.server.header_read_timeout_s * 1000)),
    ).serve()
    return 0


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


DEMO_TEXT = """
Gateway ready on {base}  (simulator on {sim}: OpenAI, Anthropic and Gemini wire formats; records in .gateway/)
Keys: {key} (tenant demo)   {trial} (tenant trial, budget $0.01 a day)
On: PII masking, rate limits, a tenant budget, failover from OpenAI to Anthropic, the answers cache
(examples/demo.yaml). Dashboard: {base}/dashboard  (sign in with {dashboard})

1. PII masking: the provider sees placeholders, you get your own text back

  curl -si {base}/v1/chat/completions -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "#echo Mail jane.doe@example.com or call +1 (415) 555-2671"}}]}}' \\
    | grep -iE '^x-gateway-pii|"content"'; curl -s '{sim}/_sim/requests?limit=1' | grep -o '#echo[^"]*' | head -1

2. Failover: gpt-4o's OpenAI deployment is down (the simulator answers 503), Anthropic answers instead

  curl -si {base}/v1/chat/completions -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\
    -d '{{"model": "gpt-4o", "messages": [{{"role": "user", "content": "Hello"}}]}}' | grep -iE '^x-gateway-(provider|route|attempts)'

3. Budget: the trial tenant's $0.01 cannot cover this request's worst case, so it is refused before it is sent

  curl -s {base}/v1/chat/completions -H "Authorization: Bearer {trial}" -H "Content-Type: application/json" \\
    -d '{{"model": "gpt-4o", "max_tokens": 4000, "messages": [{{"role": "user", "content": "Write a long essay"}}]}}'

OpenAI SDK: OpenAI(base_url="{base}/v1", api_key="{key}")   Ctrl-C stops both."""


def demo(config: str, port: int, sim_port: int, sim_profile: str) -> int:
    """Simulator + gateway in the foreground; Ctrl-C (or SIGTERM) stops both."""
    # a shell's background job starts with SIGINT ignored, and Python then installs no handler: Ctrl-C must still stop
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    env = {**os.environ, "SIM_URL": f"http://127.0.0.1:{sim_port}", "PORT": str(port)}
    env.setdefault("GATEWAY_DEMO_KEY", DEMO_KEY)
    env.setdefault("GATEWAY_TRIAL_KEY", TRIAL_KEY)
    py = sys.executable
    sim_cmd = [py, "-m", "gateway", "simulate", "--port", str(sim_port)]
    if sim_profile:
        sim_cmd += ["--profile", sim_profile]
    sim = subprocess.Popen(sim_cmd, env=env)
    gw: subprocess.Popen[bytes] | None = None
    try:
        if not _wait_http(f"http://127.0.0.1:{sim_port}/healthz", 30, sim):
            print("the simulator did not start", file=sys.stderr)
            return 1
        gw = subprocess.Popen(
            [py, "-m", "gateway", "serve", "--config", config, "--port", str(port)], env=env
        )
        if not _wait_http(f"http://127.0.0.1:{port}/readyz", 60, gw):
            print("the gateway did not start", file=sys.stderr)
            return 1
        text = DEMO_TEXT.format(
            base=f"http://127.0.0.1:{port}",
            sim=f"http://127.0.0.1:{sim_port}",
            key=env["GATEWAY_DEMO_KEY"],
            trial=env["GATEWAY_TRIAL_KEY"],
            dashboard=env.get("GATEWAY_DASHBOARD_KEY", DASHBOARD_KEY),
        )
        print(text, flush=True)
        while sim.poll() is None and gw.poll() is None:
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for p in (gw, sim):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in (gw, sim):
            if p is not None:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


def keys(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    store = SqliteStore(cfg.store.sqlite_path, key_secret=cfg.server.key_secret)
    if args.keys_cmd == "create":
        key_id, key = store.create_key(args.tenant, team=args.team, name=args.name, models=args.models or [])
        print(
            json.dumps(
                {"key_id": key_id, "key": key, "tenant": args.tenant, "note": "shown once; store it now"}
            )
        )
    elif args.keys_cmd == "list":
        print(json.dumps(store.list_keys(args.tenant), indent=2))
    elif args.keys_cmd == "revoke":
        if not store.revoke_key(args.key_id):
            print(f"no active key {args.key_id}", file=sys.stderr)
            return 1
        print(f"revoked {args.key_id}")
    return 0


def report(args: argparse.Namespace) -> int:
    from datetime import date

    from gateway.observability.reports import write

    cfg = load_config(args.config)
    day = date.fromisoformat(args.date) if args.date else None
    for p in write(cfg.store.sqlite_path, args.kind, Path(args.out), day):
        print(p)
    return 0


def check_config(path: str) -> int:
    try:
        cfg = load_config(path)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = sum(len(g.deployments) for g in cfg.models.values())
    print(f"ok: {len(cfg.models)} model groups, {n} deployments, {len(cfg.keys)} keys")
    return 0


def import_config(kind: str, path: str, out: str | None) -> int:
    import yaml

    from gateway.importers import litellm

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        print(f"error: cannot read {path}: {e}", file=sys.stderr)
        return 1
    if not isinstance(raw, dict):
        print(f"error: {path} is not a {kind} config (the top level must be a mapping)", file=sys.stderr)
        return 1
    result = litellm.convert(raw)
    text = litellm.render(result, path)
    if out:
        Path(out).write_text(text)
    else:
        sys.stdout.write(text)
    n = sum(len(g["deployments"]) for g in result.config["models"].values())
    print(f"converted {len(result.config['models'])} model groups, {n} deployments", file=sys.stderr)
    if result.skipped:
        print("not converted:", *(f"  {s}" for s in result.skipped), sep="\n", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "simulate":
        from gateway.simulate.server import main as simulate

        return simulate(argv[1:])
    if argv and argv[0] == "admin":
        from gateway.admin_cli import main as admin

        return admin(argv[1:])
    if argv and argv[0] == "bench":
        from gateway.quality.cli import main as bench

        return bench(argv[1:])
    ap = argparse.ArgumentParser(prog="gateway", description="The AI gateway.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the gateway (Granian, RSGI)")
    s.add_argument("--config", default=os.environ.get("GATEWAY_CONFIG", "examples/demo.yaml"))
    # GATEWAY_HOST / GATEWAY_PORT / GATEWAY_WORKERS override the config's server section (containers)
    s.add_argument("--host", default=os.environ.get("GATEWAY_HOST") or None)
    s.add_argument("--port", type=int, default=os.environ.get("GATEWAY_PORT") or None)
    s.add_argument("--workers", type=int, default=os.environ.get("GATEWAY_WORKERS") or None)
    d = sub.add_parser("demo", help="run the simulator and the gateway with the demo config")
    d.add_argument("--config", default="examples/demo.yaml")
    d.add_argument("--port", type=int, default=int(os.environ.get("PORT", "4000")))
    d.add_argument("--sim-port", type=int, default=int(os.environ.get("SIM_PORT", "4010")))
    d.add_argument("--sim-profile", default="examples/demo-simulator.yaml")
    sub.add_parser("simulate", help="run the provider simulator (see `gateway simulate --help`)")
    k = sub.add_parser("keys", help="manage gateway keys in the store")
    k.add_argument("--config", default=os.environ.get("GATEWAY_CONFIG", "examples/demo.yaml"))
    ks = k.add_subparsers(dest="keys_cmd", required=True)
    kc = ks.add_parser("create")
    kc.add_argument("--tenant", required=True)
    kc.add_argument("--team")
    kc.add_argument("--name")
    kc.add_argument("--models", nargs="*")
    kl = ks.add_parser("list")
    kl.add_argument("--tenant")
    kr = ks.add_parser("revoke")
    kr.add_argument("key_id")
    sub.add_parser("admin", help="call the admin API of a running gateway (see `gateway admin --help`)")
    sub.add_parser("bench", help="benchmark model groups on task suites (see `gateway bench --help`)")
    r = sub.add_parser("report", help="the daily (tier 2) or weekly (tier 3) report, as Markdown and CSV")
    r.add_argument("kind", choices=["daily", "weekly"])
    r.add_argument("--config", default=os.environ.get("GATEWAY_CONFIG", "examples/demo.yaml"))
    r.add_argument("--out", default="reports", help="directory for the .md and .csv files")
    r.add_argument("--date", help="the last day covered, YYYY-MM-DD (UTC; default today)")
    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("file")
    im = sub.add_parser("import", help="convert another gateway's config (litellm) to this gateway's YAML")
    im.add_argument("kind", choices=["litellm"])
    im.add_argument("file")
    im.add_argument("-o", "--output", help="write the YAML here instead of stdout")
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        return serve(args.config, args.host, args.port, args.workers)
    if args.cmd == "demo":
        return demo(args.config, args.port, args.sim_port, args.sim_profile)
    if args.cmd == "keys":
        return keys(args)
    if args.cmd == "report":
        return report(args)
    if args.cmd == "import":
        return import_config(args.kind, args.file, args.output)
    return check_config(args.file)


if __name__ == "__main__":
    sys.exit(main())
