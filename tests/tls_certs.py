"""A throwaway certificate authority for TLS tests: a CA, a server certificate for 127.0.0.1 and localhost,
and a client certificate, written as PEM files (with the ``cryptography`` package)."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class PKI:
    """Paths of the PEM files made by ``make_pki``."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    client_combined: str  # the client certificate and its key in one file


def make_pki(
    directory: str, name: str = "test", server_names: tuple[str, ...] = ("localhost", "127.0.0.1")
) -> PKI:
    """A CA named ``name`` and the certificates it signs, written in ``directory``: the server's is valid for
    ``server_names`` (DNS names and IP addresses)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sandstone {name} CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def issue(
        common_name: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]
    ) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = (
            _builder(subject, ca_name, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    server = issue(server_names[0], ExtendedKeyUsageOID.SERVER_AUTH, [_san(n) for n in server_names])
    client = issue("sandstone node", ExtendedKeyUsageOID.CLIENT_AUTH, [])

    def write(filename: str, data: bytes) -> str:
        path = os.path.join(directory, f"{name}-{filename}")
        with open(path, "wb") as f:
            f.write(data)
        return path

    return PKI(
        ca=write("ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM)),
        server_cert=write("server.pem", server[0]),
        server_key=write("server.key", server[1]),
        client_cert=write("client.pem", client[0]),
        client_key=write("client.key", client[1]),
        client_combined=write("client-combined.pem", client[0] + client[1]),
    )


def self_signed(name: str = "localhost") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A key and a self-signed certificate for ``name``, valid for a day (in memory)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return key, _builder(subject, subject, key).sign(key, hashes.SHA256())


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
