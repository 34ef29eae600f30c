"""Runs the mesh-link and Redis-reply fuzz targets (Sources/MeshWireFuzz, Sources/RESPFuzz) in their seeded,
libFuzzer-free mode, as test_decoder_fuzz.py does for the client decoder.

`swift build` builds `mesh-wire-fuzz` and `resp-fuzz` next to `signal`. mesh-wire-fuzz checks that link
frames and mesh messages re-encode to their bytes, that no forged handshake authenticates, and that a
running node fed every decoded message as a hostile member neither crashes nor breaks its bounds;
resp-fuzz checks that a reply decodes the same whole, in chunks and byte by byte. LINK_FUZZ_RUNS and
LINK_FUZZ_SEED run them longer or elsewhere; libFuzzer runs (a million inputs each) are in
Docs/security.md.
"""

import os
import subprocess

import pytest

from conftest import SIGNAL

RUNS = int(os.environ.get("LINK_FUZZ_RUNS", "5000"))
SEED = int(os.environ.get("LINK_FUZZ_SEED", "1"))

TARGETS = {
    "mesh-wire-fuzz": (
        "refused", "frame", "ping", "ping-req", "ack", "join", "join-reply", "gossip", "announce", "store",
        "store-ack", "signal", "hop-ack", "undeliverable",
    ),
    "resp-fuzz": (
        "ok", "error", "value:simple", "value:error", "value:int", "value:bulk", "value:null", "value:array",
        "value:set", "value:push", "value:map", "value:bool", "value:double", "value:big",
    ),
}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_link_decoders_survive_mutated_and_generated_inputs(target):
    fuzz = os.path.join(os.path.dirname(SIGNAL), target)
    assert os.access(fuzz, os.X_OK), f"{fuzz} missing: build with `swift build`"
    run = subprocess.run([fuzz, "--runs", str(RUNS), "--seed", str(SEED)], capture_output=True, text=True, timeout=1800)
    print(run.stdout[-2000:], run.stderr[-4000:])
    assert run.returncode == 0, run.stderr[-4000:]
    assert f"{RUNS} inputs from seed {SEED}" in run.stdout and "no invariant broken" in run.stdout
    outcomes = dict(
        (name, int(count))
        for name, count in (item.rsplit(" ", 1) for item in run.stdout.split("outcomes: ", 1)[1].strip().split(", "))
    )
    # The inputs reach every message type and every outcome, not only the refusals.
    for outcome in TARGETS[target]:
        assert outcomes.get(outcome, 0) > 0, f"no input reached {outcome}: {outcomes}"
