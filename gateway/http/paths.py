"""Route patterns of the gateway's per-route tables (`gateway.http.auth.POLICY`,
`gateway.http.body_limit.BODY_LIMITS`): segments separated by `/`, `*` matches one segment, and
a pattern also matches every path below it."""
from __future__ import annotations


def match(pattern: str, path: str) -> bool:
    pp = pattern.strip("/").split("/")
    parts = path.strip("/").split("/")
    if len(parts) < len(pp):
        return False
    return all(p == "*" or p == s for p, s in zip(pp, parts))
