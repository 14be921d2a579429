"""trio's own SSL test suite, run against TLSStream: the drop-in promise, checked by the tests
trio.SSLStream itself has to pass (renegotiation against pyOpenSSL, lockstep transports, full
duplex, the stream conformance checks, checkpoints, error classes, and the
``open_ssl_over_tcp_stream`` / ``open_ssl_over_tcp_listeners`` helpers).

trio ships its tests inside the package; they need pyOpenSSL (a test extra). The run happens in
a pytest of its own with ``trio_ssl_as_tlsstream`` as a plugin, which swaps the class. Nothing
is expected to differ: its table of differences is empty, and ``--run-slow`` runs the tests
trio itself skips by default, so none is skipped either.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

pytestmark = pytest.mark.interop

HERE = Path(__file__).parent


@pytest.mark.skipif(
    importlib.util.find_spec("trio._tests.test_ssl") is None,
    reason="this trio was installed without its tests",
)
@pytest.mark.skipif(
    importlib.util.find_spec("OpenSSL") is None, reason="pyOpenSSL is not installed"
)
async def test_trio_ssl_suite_passes_with_tlsstream(tmp_path: Path) -> None:
    config = tmp_path / "pytest.ini"
    config.write_text("[pytest]\n")  # not our settings: trio's tests as trio runs them
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    argv = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(config),
        "-p", "trio._tests.pytest_plugin", "-p", "trio_ssl_as_tlsstream", "--run-slow",
        "--pyargs", "trio._tests.test_ssl", "trio._tests.test_highlevel_ssl_helpers",
    ]  # fmt: skip
    with trio.fail_after(300):
        result = await trio.run_process(
            argv, env=env, cwd=tmp_path, check=False, capture_stdout=True, stderr=subprocess.STDOUT
        )
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, output[-6000:]
    assert " passed" in output
