"""sensorlake's own certificate authority: one per data dir, created on first use.

Devices authenticate by client certificate, so the CA's private key is the root of trust of the
whole fleet: it is written with mode 0600 and never leaves the data dir. Device certificates carry
the device name as the subject's common name and a per-issue serial, so that a rotated or revoked
certificate stops matching its device even though the CA still signs it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sensorlake.errors import CertificateError

CA_DAYS = 20 * 365
LEAF_DAYS = 5 * 365
CA_NAME = "sensorlake device CA"


@dataclass(frozen=True)
class IssuedCertificate:
    key_pem: bytes
    cert_pem: bytes
    serial: str
    """Hex serial number; also the certificate's subject serialNumber (see `device_subject`)."""
    not_after: dt.datetime


def device_subject(name: str, serial: str) -> str:
    """The subject as nats-server prints it (RFC 2253, last RDN first) for `verify_and_map`."""
    return f"SERIALNUMBER={serial},CN={name}"


def write_private(path: Path, data: bytes) -> None:
    """Write key material readable by the owner only, from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CertificateAuthority:
    """Loads the CA from `<dir>/ca.key` and `<dir>/ca.crt`, creating both on first use."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key_path = directory / "ca.key"
        self.cert_path = directory / "ca.crt"
        if self.key_path.exists() != self.cert_path.exists():
            raise CertificateError(
                f"{directory} holds only one of ca.key and ca.crt",
                hint="restore the missing file from a backup; deleting both creates a new CA, "
                "after which every device needs a new bundle",
            )
        if not self.key_path.exists():
            self._create()
        try:
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
            self.cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        except (ValueError, TypeError) as exc:
            raise CertificateError(f"cannot read the CA in {directory}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(f"{self.key_path} is not an EC private key")
        self._key = key

    def _create(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        write_private(self.key_path, _key_pem(key))
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def _issue(
        self, subject: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]
    ) -> IssuedCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        serial = x509.random_serial_number()
        not_after = min(now + dt.timedelta(days=LEAF_DAYS), self.cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return IssuedCertificate(
            _key_pem(key), cert.public_bytes(serialization.Encoding.PEM), f"{serial:x}", not_after
        )

    def issue_device(self, name: str) -> IssuedCertificate:
        """A client certificate whose subject names the device and this issue's serial."""
        serial = x509.random_serial_number()
        subject = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, f"{serial:x}"),
        ])
        issued = self._issue(subject, ExtendedKeyUsageOID.CLIENT_AUTH, [])
        # The subject's serialNumber, not the certificate's, is what nats-server maps.
        return IssuedCertificate(issued.key_pem, issued.cert_pem, f"{serial:x}", issued.not_after)

    def issue_server(self, hosts: list[str]) -> IssuedCertificate:
        """The TLS listeners' certificate, valid for every name or address devices dial."""
        sans: list[x509.GeneralName] = []
        for host in dict.fromkeys(hosts):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
        return self._issue(subject, ExtendedKeyUsageOID.SERVER_AUTH, sans)


def certificate_hosts(cert_pem: bytes) -> list[str]:
    """Names and addresses a certificate is valid for (to tell whether to reissue it)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in sans.get_values_for_type(x509.DNSName)] + [
        str(v) for v in sans.get_values_for_type(x509.IPAddress)
    ]
