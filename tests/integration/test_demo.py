"""``make demo`` as a newcomer sees it: ``gateway demo`` starts the simulator and the gateway, prints the ready
text, and the three copy-paste commands in it show PII masking, a failover and a budget reject."""

from __future__ import annotations

import re
import signal
import subprocess
import time
import urllib.request

from tests.conftest import PY, ROOT, free_port


def read_ready_text(proc: subprocess.Popen[str], timeout_s: float = 90) -> str:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("the demo exited:\n" + "".join(lines))
        lines.append(line)
        if "Ctrl-C stops both." in line:
            return "".join(lines)
    raise AssertionError("no ready text:\n" + "".join(lines))


def commands(text: str) -> list[str]:
    """The copy-paste commands: each starts with '  curl' and continues over lines ending in a backslash."""
    out, current = [], ""
    for line in text.splitlines():
        if line.startswith("  curl") or current:
            current += line.rstrip("\\").strip() + " "
            if not line.endswith("\\"):
                out.append(current.strip())
                current = ""
    return out


def test_demo_ready_text_and_its_three_commands(tmp_path) -> None:
    port, sim_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            PY, "-m", "gateway", "demo", "--port", str(port), "--sim-port", str(sim_port),
            "--config", str(ROOT / "examples" / "demo.yaml"),
            "--sim-profile", str(ROOT / "examples" / "demo-simulator.yaml"),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        text = read_ready_text(proc)
        masking, failover, budget = commands(text)
        outs = [
            subprocess.run(["bash", "-c", c], capture_output=True, text=True, timeout=60).stdout
            for c in (masking, failover, budget)
        ]
        dash = re.search(r"Dashboard: (\S+)\s+\(sign in with (\S+)\)", text)
        assert dash is not None
        page = urllib.request.Request(dash.group(1))
        data = urllib.request.Request(
            dash.group(1) + "/api/summary?range=15m", headers={"authorization": f"Bearer {dash.group(2)}"}
        )
        dash_status = [urllib.request.urlopen(r, timeout=30).status for r in (page, data)]
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    print(text)
    for title, out in zip(("masking", "failover", "budget"), outs, strict=True):
        print(f"--- {title}\n{out}")

    # 1. the caller gets its own text back; the provider saw placeholders, never the email or the phone number
    assert "jane.doe@example.com" in outs[0] and "555-2671" in outs[0]
    seen = outs[0].splitlines()[-1]
    assert seen.startswith("#echo") and "jane.doe@example.com" not in seen and "555-2671" not in seen
    assert re.search(r"<EMAIL_ADDRESS_\d+>", seen), seen
    # 2. OpenAI was tried and failed; Anthropic answered
    assert re.search(r"(?im)^x-gateway-provider: anthropic", outs[1]), outs[1]
    assert re.search(r"(?im)^x-gateway-attempts: 2", outs[1]), outs[1]
    # 3. refused before the call, with what the budget is and what the request would cost
    assert '"code":"budget_exceeded"' in outs[2].replace(" ", ""), outs[2]
    assert "trial" in outs[2]
    # the dashboard the ready text points at: the page, and its data with the key the text names
    assert dash_status == [200, 200]
    assert code == 0
