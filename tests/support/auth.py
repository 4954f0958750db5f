"""API tokens in tests (gateway/http/auth.py, docs/security.md): created with the CLI against a
running gateway's database, sent as a bearer header."""
from __future__ import annotations

import subprocess
import sys

from hil.sim.firmware import ROOT


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def token(gw, name, role):
    """Created with the CLI, against the running gateway's database."""
    r = subprocess.run([sys.executable, "-m", "tools.cli", "token", "--db", str(gw.db),
                        "create", "--name", name, "--role", role],
                       cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()
