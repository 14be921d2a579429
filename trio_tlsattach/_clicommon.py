"""What the ``tlsattach`` subcommands share that is not the tunnel itself: the default certificate.

Theory of operation
-------------------
With no ``--cert``, ``serve`` makes a certificate for localhost in memory: a CA from trustme,
and a leaf signed by that CA that strict RFC 5280 path validation accepts. trustme's own leaf
is made for test suites: its subject is not empty and its subjectAltName is marked critical,
which RFC 5280 4.2.1.6 forbids, so strict verifiers (cryptography's, used by sslyze; webpki)
refuse the chain. The leaf here is what a public CA would issue for a TLS server: subject
``CN=localhost``, a non-critical subjectAltName (``localhost``, ``127.0.0.1``, ``::1``),
``serverAuth`` only, a P-256 key (the cheapest handshake), a year of validity.
"""

from __future__ import annotations

import datetime
import ipaddress
import os

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["LEAF_VALIDITY", "self_signed"]

LEAF_VALIDITY = datetime.timedelta(days=365)
"""How long the default leaf certificate is valid (from an hour before it is made)."""


def _leaf(ca: trustme.CA, names: list[x509.GeneralName]) -> tuple[bytes, bytes]:
    """A leaf for ``names`` signed by ``ca``: (certificate PEM, private key PEM)."""
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    signer = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)  # trustme's default key type
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
        .sign(signer, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def self_signed(directory: str) -> tuple[str, str]:
    """A localhost certificate made in memory; returns (cert+key PEM path, CA PEM path).

    Both files are written to ``directory`` (the caller removes it), so that worker processes
    load the same certificate and a client can be pointed at the CA.
    """
    ca = trustme.CA()
    names: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert_pem, key_pem = _leaf(ca, names)
    ca_path = os.path.join(directory, "ca.pem")
    leaf_path = os.path.join(directory, "server.pem")
    ca.cert_pem.write_to_path(ca_path)
    with open(leaf_path, "wb") as f:
        f.write(key_pem + cert_pem)
    return leaf_path, ca_path
