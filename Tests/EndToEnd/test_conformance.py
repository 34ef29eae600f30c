"""RFC 6455 conformance: the Autobahn|Testsuite fuzzing client (cases 1-10) against `/echo`.

Runs Tests/Conformance/run-autobahn against a hub started here (same flags the script uses on its own),
so a regression in any case (FAILED, WRONG CODE, UNCLEAN, missing cases) fails this test. Needs
.venv2/bin/wstest, which Scripts/test-all creates (Python 2.7 via pyenv).
"""

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import urllib.request

from conftest import ROOT

SCRIPT = os.path.join(ROOT, "Tests", "Conformance", "run-autobahn")
WSTEST = os.environ.get("WSTEST", os.path.join(ROOT, ".venv2", "bin", "wstest"))


def load_script():
    loader = importlib.machinery.SourceFileLoader("run_autobahn", SCRIPT)
    spec = importlib.util.spec_from_loader("run_autobahn", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_autobahn_fuzzingclient_cases_1_to_10(start_hub, tmp_path):
    assert os.access(WSTEST, os.X_OK), f"{WSTEST} missing: run Scripts/test-all, which creates .venv2"
    script = load_script()
    hub = start_hub(*script.HUB_ARGS)
    rss_before = hub.rss_bytes()
    run = subprocess.run(
        [sys.executable, SCRIPT, "--url", f"ws://127.0.0.1:{hub.port}/echo", "--wstest", WSTEST,
         "--report-dir", str(tmp_path / "autobahn")],
        capture_output=True, text=True, timeout=1200,
    )
    print(run.stdout, run.stderr)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert f"{script.EXPECTED_CASES} cases" in run.stdout
    # The hub survived every case and still answers.
    assert hub.proc.poll() is None
    with urllib.request.urlopen(hub.http + "/healthz", timeout=5) as r:
        assert r.status == 200
    print(f"hub RSS before {rss_before >> 20} MiB, after {hub.rss_bytes() >> 20} MiB")

