"""Provider credentials: where a deployment's keys come from, resolved when a config is loaded.

A deployment's keys are the union, in this order, of ``api_key``, ``api_keys``, the lines of ``api_key_file``
(e.g. a mounted secret under ``/run/secrets/``) and the lines ``api_key_cmd`` prints (a vault CLI). Several keys
are used in turn, one per request. Files and commands are read again on every reload, so rotating a key is:
update the secret, then ``SIGHUP`` or ``POST /admin/reload``. No message here ever contains a key.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

CMD_TIMEOUT_S = 15.0


class CredentialError(ValueError):
    """Names the field and what went wrong, never the secret."""


def _lines(text: str) -> list[str]:
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def read_key_file(path: str) -> list[str]:
    try:
        keys = _lines(Path(path).read_text())
    except OSError as e:
        raise CredentialError(f"cannot read {path}: {e.strerror}") from None
    if not keys:
        raise CredentialError(f"{path} holds no key")
    return keys


def run_key_cmd(cmd: str) -> list[str]:
    """Run ``cmd`` (no shell) and take the keys it prints, one per line."""
    try:
        out = subprocess.run(
            shlex.split(cmd), capture_output=True, text=True, timeout=CMD_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except (OSError, ValueError) as e:
        raise CredentialError(f"cannot run the command: {e}") from None
    except subprocess.TimeoutExpired:
        raise CredentialError(f"the command did not finish within {CMD_TIMEOUT_S:.0f} s") from None
    if out.returncode != 0:
        # stderr says why (permission denied, not logged in); stdout may hold a partial secret: never shown
        why = _lines(out.stderr)[-1][:200] if _lines(out.stderr) else "no message"
        raise CredentialError(f"the command exited with status {out.returncode} ({why})")
    keys = _lines(out.stdout)
    if not keys:
        raise CredentialError("the command printed no key")
    return keys
