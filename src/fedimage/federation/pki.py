"""The keys and certificates of a federation: a private CA, the server's TLS certificate, node keys.

- :func:`make_authority`: a self-signed certificate authority (EC P-384, SHA-384) that the
  operator keeps; every site trusts its certificate (``ca.crt``).
- :func:`issue_server_certificate`: the server's TLS certificate, signed by that authority, for
  the names (DNS names or IP addresses) clients connect to.
- :func:`make_node_key_pair`: a client's node-authentication key pair, EC P-384 in OpenSSH
  format: the private key is what ``flower-supernode --auth-supernode-private-key`` reads
  (Flower 1.42 loads it with ``cryptography``'s ``load_ssh_private_key`` and requires an EC key),
  the public key what ``flwr supernode register`` reads (``load_ssh_public_key``, an EC key on a
  NIST curve).

Private keys are written by :func:`write_private_file`: created with mode 0600 and never over
an existing file. Needs the ``privacy`` extra (``cryptography``).

Example::

    ca_key, ca_cert = make_authority("my federation CA")
    key, cert = issue_server_certificate(ca_key, ca_cert, ["fl.example.org", "10.0.0.5"])
    write_private_key(Path("server.key"), key)
    write_certificate(Path("server.crt"), cert)
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from fedimage.errors import OptionError
from fedimage.extras import require

require("cryptography", "federation kits")  # a clear error before the imports below

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

#: Days a new certificate stays valid.
DEFAULT_VALIDITY_DAYS = 365
#: The curve of every key made here (a NIST curve, as Flower's node authentication requires).
CURVE = ec.SECP384R1
_PRIVATE_FILE = 0o600
_PRIVATE_FOLDER = 0o700
_CLOCK_SKEW = datetime.timedelta(minutes=5)  # certificates start a little early: sites' clocks differ
_MAX_COMMON_NAME = 64  # X.520's upper bound on a common name


def _check_days(validity_days: int) -> None:
    if not isinstance(validity_days, int) or isinstance(validity_days, bool) or validity_days < 1:
        raise OptionError(
            f"`validity_days` must be a whole number of days, at least 1, got {validity_days!r}"
        )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:_MAX_COMMON_NAME] or "fedimage")])


def make_authority(
    common_name: str, *, validity_days: int = DEFAULT_VALIDITY_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new self-signed certificate authority: an EC P-384 key and its SHA-384 certificate.

    The certificate is a CA (basicConstraints ``CA=True``, path length 0: it signs site
    certificates, not other CAs) whose key may only sign certificates and CRLs.

    Parameters:
        common_name: the authority's name (cut to 64 characters).
        validity_days: how long the certificate is valid, from now.

    Example::

        ca_key, ca_cert = make_authority("fedimage federation CA")
    """
    _check_days(validity_days)
    key = ec.generate_private_key(CURVE())
    now = datetime.datetime.now(datetime.UTC)
    name = _name(common_name)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, certificate


def subject_alternative_name(name: str) -> x509.GeneralName:
    """``name`` as a SubjectAltName entry: an IP address when it parses as one, else a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    names: Sequence[str],
    *,
    validity_days: int = DEFAULT_VALIDITY_DAYS,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new EC P-384 key and a TLS server certificate for it, signed by the authority.

    The certificate names every entry of ``names`` in its SubjectAltName (an ``IPAddress``
    for an IP address, a ``DNSName`` otherwise; the first is also its common name), is no
    CA, and is for server authentication only. It never outlives the authority's certificate.

    Parameters:
        ca_key: the authority's private key (:func:`make_authority`).
        ca_cert: the authority's certificate.
        names: the host names and IP addresses clients reach the server by (at least one).
        validity_days: how long the certificate is valid, from now.

    Example::

        key, cert = issue_server_certificate(ca_key, ca_cert, ["fl.example.org", "10.0.0.5"])
    """
    _check_days(validity_days)
    unique = list(dict.fromkeys(names))
    if not unique or not all(isinstance(name, str) and name for name in unique):
        raise OptionError(f"a server certificate needs at least one non-empty name, got {list(names)!r}")
    key = ec.generate_private_key(CURVE())
    now = datetime.datetime.now(datetime.UTC)
    expires = min(now + datetime.timedelta(days=validity_days), ca_cert.not_valid_after_utc)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(unique[0]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(expires)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([subject_alternative_name(name) for name in unique]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    return key, certificate


def make_node_key_pair() -> tuple[bytes, bytes]:
    """A client's node-authentication key pair: (private key, public key), EC P-384 in OpenSSH format.

    The private key is an unencrypted ``-----BEGIN OPENSSH PRIVATE KEY-----`` block, as
    ``ssh-keygen -t ecdsa -b 384 -N ""`` writes; the public key one line,
    ``ecdsa-sha2-nistp384 AAAA...``. These are the formats Flower 1.42 reads for SuperNode
    authentication (``load_ssh_private_key`` / ``load_ssh_public_key``).

    Example::

        private, public = make_node_key_pair()
        write_private_file(Path("node.key"), private)
        Path("node.pub").write_bytes(public)
    """
    key = ec.generate_private_key(CURVE())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + b"\n"


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """An unencrypted PKCS#8 PEM of ``key`` (what gRPC's TLS and Flower's ``--ssl-keyfile`` read)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def certificate_pem(certificate: x509.Certificate) -> bytes:
    """``certificate`` as PEM."""
    return certificate.public_bytes(serialization.Encoding.PEM)


def write_private_file(path: str | os.PathLike[str], data: bytes) -> Path:
    """Create ``path`` with mode 0600 (owner only) and write ``data``; an existing file is never replaced.

    The file is created with that mode (``O_CREAT | O_EXCL``), so no other user can open it
    even for a moment; the mode is then set exactly (a umask may have narrowed it) before
    anything is written.

    Parameters:
        path: the file to create.
        data: the secret bytes.

    Example::

        write_private_file(Path("node.key"), private)
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE_FILE)
    except FileExistsError:
        raise OptionError(f"{path} already exists; refusing to overwrite a private key") from None
    except OSError as error:
        raise OptionError(f"cannot create {path}: {error.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), _PRIVATE_FILE)
        handle.write(data)
    return path


def write_private_key(path: str | os.PathLike[str], key: ec.EllipticCurvePrivateKey) -> Path:
    """Write ``key`` as PKCS#8 PEM to a new file of mode 0600 (:func:`write_private_file`)."""
    return write_private_file(path, private_key_pem(key))


def write_certificate(path: str | os.PathLike[str], certificate: x509.Certificate) -> Path:
    """Write ``certificate`` as PEM (a public file)."""
    path = Path(path)
    path.write_bytes(certificate_pem(certificate))
    return path


def make_private_folder(path: str | os.PathLike[str]) -> Path:
    """Create the folder ``path`` with mode 0700 (owner only); it must not exist yet."""
    path = Path(path)
    path.mkdir(mode=_PRIVATE_FOLDER)
    os.chmod(path, _PRIVATE_FOLDER)  # a umask may have narrowed it; the folder is still empty
    return path


__all__ = [
    "CURVE",
    "DEFAULT_VALIDITY_DAYS",
    "certificate_pem",
    "issue_server_certificate",
    "make_authority",
    "make_node_key_pair",
    "make_private_folder",
    "private_key_pem",
    "subject_alternative_name",
    "write_certificate",
    "write_private_file",
    "write_private_key",
]
