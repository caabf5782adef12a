"""A throwaway certificate authority and server certificate, made at test time."""

from __future__ import annotations

import datetime
import ipaddress

import attr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@attr.s(frozen=True)
class Certificates:
    """Paths of the CA certificate (for clients), the server's certificate and its key."""

    ca: str = attr.ib()
    cert: str = attr.ib()
    key: str = attr.ib()


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_certificates(directory, hosts=None) -> Certificates:
    """
    A CA and a server certificate it signed for ``localhost``, ``127.0.0.1``
    and ``::1``, or for the DNS names ``hosts`` (P-256 keys: quick to make),
    written under ``directory``.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("antenna-tw test CA"))
          .issuer_name(_name("antenna-tw test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
             x509.IPAddress(ipaddress.ip_address("::1"))]
    if hosts is not None:
        names = [x509.DNSName(host) for host in hosts]
    common_name = hosts[0] if hosts else "localhost"
    cert = (x509.CertificateBuilder().subject_name(_name(common_name))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = Certificates(str(directory / "ca.pem"), str(directory / "cert.pem"),
                             str(directory / "key.pem"))
    with open(paths.ca, "wb") as file:
        file.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths.cert, "wb") as file:
        file.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths.key, "wb") as file:
        file.write(_pem_key(key))
    return paths
