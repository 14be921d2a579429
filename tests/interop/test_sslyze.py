"""A TLS scanner's verdict on ``tlsattach serve`` with no flags at all (its secure defaults).

sslyze (a scanner no one here wrote) connects a few hundred times to a ``tlsattach serve``
started on port 0 with its embedded self-signed certificate, and the test checks what it
reports: no SSL 2/3 and no TLS 1.0/1.1; in TLS 1.2 and 1.3 only forward-secret AEAD or SHA-2
suites of at least 128 bits (no SHA-1 MAC); only strong curves; no compression; secure
renegotiation, and a client-initiated renegotiation refused; not vulnerable to Heartbleed,
ROBOT or CCS injection; and a certificate chain that sslyze's own path validation accepts
against the CA file that ``serve`` printed. Only the plugins these checks need run, ten
connections at a time, so the scan takes about a second here (bounded at a minute).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from test_cli import CLI, Serve

sslyze = pytest.importorskip("sslyze")

pytestmark = [
    pytest.mark.interop,
    # sslyze loads its bundled trust stores, one of whose certificates has a negative serial
    # number: cryptography warns about that certificate, not about anything of ours.
    pytest.mark.filterwarnings("ignore:Parsed a serial number"),
]

SCAN_BUDGET = 60.0
PROTOCOLS_REFUSED = ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1")
STRONG_CURVES = {"X25519", "X448", "secp256r1", "secp384r1", "secp521r1"}
# Weak, or (CBC: Lucky 13 and friends) outside Mozilla's "intermediate" profile.
WEAK_CIPHER_PARTS = ("NULL", "anon", "EXPORT", "RC4", "DES", "MD5", "IDEA", "SEED", "PSK", "_CBC_")


def completed(result: Any, name: str) -> Any:
    """The result of one scan command, failing with sslyze's own trace if it did not run."""
    attempt = getattr(result, name)
    assert attempt.status == sslyze.ScanCommandAttemptStatusEnum.COMPLETED, (
        name,
        attempt.error_reason,
        attempt.error_trace and "".join(attempt.error_trace.format()),
    )
    return attempt.result


def scan(port: int, ca: str) -> Any:
    """Run the needed plugins against 127.0.0.1:``port`` (SNI localhost) and return the result."""
    commands = {
        getattr(sslyze.ScanCommand, f"{p.upper()}_CIPHER_SUITES") for p in PROTOCOLS_REFUSED
    }
    commands |= {
        sslyze.ScanCommand.TLS_1_2_CIPHER_SUITES,
        sslyze.ScanCommand.TLS_1_3_CIPHER_SUITES,
        sslyze.ScanCommand.ELLIPTIC_CURVES,
        sslyze.ScanCommand.TLS_COMPRESSION,
        sslyze.ScanCommand.SESSION_RENEGOTIATION,
        sslyze.ScanCommand.HEARTBLEED,
        sslyze.ScanCommand.ROBOT,
        sslyze.ScanCommand.OPENSSL_CCS_INJECTION,
        sslyze.ScanCommand.CERTIFICATE_INFO,
    }
    request = sslyze.ServerScanRequest(
        server_location=sslyze.ServerNetworkLocation("localhost", port, ip_address="127.0.0.1"),
        network_configuration=sslyze.ServerNetworkConfiguration(
            "localhost", network_timeout=5, network_max_retries=1
        ),
        scan_commands=commands,
        scan_commands_extra_arguments=sslyze.ScanCommandsExtraArguments(
            certificate_info=sslyze.CertificateInfoExtraArgument(custom_ca_file=Path(ca))
        ),
    )
    scanner = sslyze.Scanner(per_server_concurrent_connections_limit=10)
    scanner.queue_scans([request])
    [server] = list(scanner.get_results())
    assert server.scan_status == sslyze.ServerScanStatusEnum.COMPLETED, server
    return server.scan_result


def test_sslyze_finds_nothing_to_report() -> None:
    # No flags but the free port: the defaults are what is scanned. Its log (a line per probe
    # that failed its handshake) would fill a pipe nobody reads during the scan.
    server = Serve(command=[*CLI, "serve", "--listen", "127.0.0.1:0"], stderr=subprocess.DEVNULL)
    try:
        started = time.monotonic()
        result = scan(server.port, server.ca)
        assert time.monotonic() - started < SCAN_BUDGET
        server.stop()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.communicate()

    for protocol in PROTOCOLS_REFUSED:
        assert completed(result, f"{protocol}_cipher_suites").accepted_cipher_suites == []
    suites = [
        accepted.cipher_suite
        for version in ("tls_1_2", "tls_1_3")
        for accepted in completed(result, f"{version}_cipher_suites").accepted_cipher_suites
    ]
    assert any(suite.name.startswith("TLS_AES_") for suite in suites)  # TLS 1.3 is on
    for suite in suites:
        assert suite.key_size >= 128, suite
        assert not any(part in suite.name for part in WEAK_CIPHER_PARTS), suite
        assert not suite.name.endswith("_SHA"), suite  # a SHA-1 MAC
        tls13 = suite.openssl_name.startswith("TLS_")
        assert tls13 or suite.openssl_name.startswith(("ECDHE-", "DHE-")), suite  # forward secret

    curves = completed(result, "elliptic_curves")
    assert curves.supports_ecdh_key_exchange
    assert {curve.name for curve in curves.supported_curves} <= STRONG_CURVES

    assert not completed(result, "tls_compression").supports_compression
    renegotiation = completed(result, "session_renegotiation")
    assert renegotiation.supports_secure_renegotiation
    assert not renegotiation.is_vulnerable_to_client_renegotiation_dos
    assert renegotiation.client_renegotiations_success_count == 0
    assert not completed(result, "heartbleed").is_vulnerable_to_heartbleed
    assert not completed(result, "openssl_ccs_injection").is_vulnerable_to_ccs_injection
    robot = completed(result, "robot").robot_result
    assert robot.name.startswith("NOT_VULNERABLE"), robot

    deployments = completed(result, "certificate_info").certificate_deployments
    assert deployments
    for deployment in deployments:
        ours = [
            validation
            for validation in deployment.path_validation_results
            if validation.trust_store.path == Path(server.ca)
        ]
        assert len(ours) == 1, deployment.path_validation_results
        assert ours[0].was_validation_successful, ours[0].validation_error
        assert deployment.received_chain_has_valid_order
        assert not deployment.verified_chain_has_sha1_signature
