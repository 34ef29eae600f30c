"""Small helpers shared by the browser, aiortc and cross-stack tests."""

import os
import re
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def web_args():
    """`signal serve` arguments for the web assets: the built-in copies, unless SIGNAL_WEB_ROOT points
    at a directory to serve instead (handy while editing Sources/Signaling/Web without rebuilding)."""
    root = os.environ.get("SIGNAL_WEB_ROOT")
    return ["--web-root", root] if root else []


def metric(hub, name, **labels):
    """The value of one Prometheus sample of the hub's /metrics (0 when absent)."""
    total = 0.0
    for line in hub.metrics().splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == str(v) for k, v in labels.items()):
            total += float(match.group(3))
    return total


def http_get(url, context=None):
    with urllib.request.urlopen(url, timeout=5, context=context) as r:
        return r.status, dict(r.headers), r.read().decode()


def strictly_increasing(seqs):
    return all(b > a for a, b in zip(seqs, seqs[1:]))
