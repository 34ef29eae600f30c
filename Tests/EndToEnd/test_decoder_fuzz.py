"""Runs the protocol decoder's fuzz target (Sources/DecoderFuzz) in its seeded, libFuzzer-free mode.

`swift build` builds `decoder-fuzz` next to `signal`; each run feeds it mutated and generated messages
and checks DecoderOracle's invariants (no crash, the relayed `from`/`seq` are the server's, error replies
are valid JSON, ...). DECODER_FUZZ_RUNS and DECODER_FUZZ_SEED run it longer or elsewhere; libFuzzer runs
are described in Docs/security.md.
"""

import os
import subprocess

from conftest import SIGNAL

FUZZ = os.path.join(os.path.dirname(SIGNAL), "decoder-fuzz")
RUNS = int(os.environ.get("DECODER_FUZZ_RUNS", "100000"))
SEED = int(os.environ.get("DECODER_FUZZ_SEED", "1"))


def test_decoder_survives_mutated_and_generated_messages():
    assert os.access(FUZZ, os.X_OK), f"{FUZZ} missing: build with `swift build`"
    run = subprocess.run([FUZZ, "--runs", str(RUNS), "--seed", str(SEED)], capture_output=True, text=True, timeout=1800)
    print(run.stdout[-2000:], run.stderr[-4000:])
    assert run.returncode == 0, run.stderr[-4000:]
    assert f"{RUNS} inputs from seed {SEED}" in run.stdout and "no invariant broken" in run.stdout
    # The inputs reach every branch of the decoder, not only the JSON syntax errors.
    outcomes = dict(
        (name, int(count))
        for name, count in (item.rsplit(" ", 1) for item in run.stdout.split("outcomes: ", 1)[1].strip().split(", "))
    )
    for outcome in ("offer", "answer", "candidate", "bye", "message", "join", "leave", "ping", "received",
                    "error:bad-message", "error:unknown-type", "error:too-large"):
        assert outcomes.get(outcome, 0) > 0, f"no input decoded as {outcome}: {outcomes}"
