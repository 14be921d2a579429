"""Every example runs as its docstring says (a subprocess each, bounded in time)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))
EXPECTED = {
    "detach.py": b"client got in plaintext: b'plaintext from the server'",
    "echo_server.py": b"client 2 got b'hello from client 2'",
    "tls_messages.py": b"<ProtocolStack tcp > tls(client, TLSv1.3) > prefix(4)>",
    "tls_over_pipes.py": b"child says: b'HELLO THROUGH PIPES' over TLSv1.3",
    "socks5_tunnel.py": b"target says: b'hello over TLS, through SOCKS5'",
    "tls_over_unix.py": b"echo: b'over a unix socket'",
    "wss_echo.py": b"echo: h\xc3\xa9llo b'\\x00\\x01binary'",
}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(example)], capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    assert EXPECTED[example.name] in result.stdout
