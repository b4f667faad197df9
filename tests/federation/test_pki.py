"""The federation's PKI: a CA, a server certificate it signs, node keys in Flower's format, private files."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat

import pytest

from fedimage.errors import OptionError

pytest.importorskip("cryptography")

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from fedimage.federation import pki


@pytest.fixture(scope="module")
def authority() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    return pki.make_authority("test CA")


def verify(ca: x509.Certificate, leaf: x509.Certificate, name: x509.GeneralName) -> None:
    """Path validation as a TLS client does it (cryptography's web-PKI verifier)."""
    verifier = PolicyBuilder().store(Store([ca])).build_server_verifier(name)
    verifier.verify(leaf, [])


def test_the_authority_is_a_p384_sha384_ca(authority):
    key, cert = authority
    assert isinstance(key.curve, ec.SECP384R1)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert cert.public_key() == key.public_key()


def test_the_server_certificate_is_signed_by_the_ca_for_its_names(authority):
    ca_key, ca_cert = authority
    key, cert = pki.issue_server_certificate(
        ca_key, ca_cert, ["fl.example.org", "10.0.0.5", "::1"], validity_days=30
    )
    cert.verify_directly_issued_by(ca_cert)
    assert cert.public_key() == key.public_key() and isinstance(key.curve, ec.SECP384R1)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["fl.example.org"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("::1"),
    ]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=29) < lifetime <= datetime.timedelta(days=30)
    verify(ca_cert, cert, x509.DNSName("fl.example.org"))
    verify(ca_cert, cert, x509.IPAddress(ipaddress.ip_address("10.0.0.5")))
    with pytest.raises(x509.verification.VerificationError):
        verify(ca_cert, cert, x509.DNSName("other.example.org"))
    with pytest.raises(x509.verification.VerificationError):  # an IP address is no DNS name
        verify(ca_cert, cert, x509.DNSName("10.0.0.5"))


def test_a_certificate_of_another_ca_does_not_verify(authority):
    other_key, other_cert = pki.make_authority("other CA")
    _, cert = pki.issue_server_certificate(other_key, other_cert, ["fl.example.org"])
    with pytest.raises(x509.verification.VerificationError):
        verify(authority[1], cert, x509.DNSName("fl.example.org"))


def test_the_server_certificate_never_outlives_its_ca():
    ca_key, ca_cert = pki.make_authority("short CA", validity_days=2)
    _, cert = pki.issue_server_certificate(ca_key, ca_cert, ["localhost"], validity_days=365)
    assert cert.not_valid_after_utc == ca_cert.not_valid_after_utc


def test_bad_names_and_days_are_refused(authority):
    with pytest.raises(OptionError, match="at least one"):
        pki.issue_server_certificate(*authority, [])
    with pytest.raises(OptionError, match="`validity_days`"):
        pki.issue_server_certificate(*authority, ["a"], validity_days=0)
    with pytest.raises(OptionError, match="`validity_days`"):
        pki.make_authority("x", validity_days=True)


def test_node_keys_are_what_flower_loads():
    """flower-supernode reads the private key with load_ssh_private_key and needs an EC key;
    flwr supernode register reads the public one with load_ssh_public_key (EC, NIST curve)."""
    private, public = pki.make_node_key_pair()
    assert private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert public.startswith(b"ecdsa-sha2-nistp384 ") and public.count(b"\n") == 1
    private_key = serialization.load_ssh_private_key(private, None)
    public_key = serialization.load_ssh_public_key(public)
    assert isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(public_key.curve, ec.SECP384R1)
    assert private_key.public_key() == public_key
    signature = private_key.sign(b"message", ec.ECDSA(hashes.SHA256()))  # as Flower signs
    public_key.verify(signature, b"message", ec.ECDSA(hashes.SHA256()))
    assert pki.make_node_key_pair()[0] != private


def test_node_keys_load_in_flower_if_installed(tmp_path):
    register = pytest.importorskip("flwr.cli.supernode.register")
    from flwr.supercore.primitives.asymmetric import bytes_to_public_key

    private, public = pki.make_node_key_pair()
    (tmp_path / "node.pub").write_bytes(public)
    loaded = bytes_to_public_key(register.try_load_public_key(tmp_path / "node.pub"))
    assert loaded == serialization.load_ssh_private_key(private, None).public_key()


def test_private_files_are_created_0600_and_never_replaced(tmp_path, authority):
    old_umask = os.umask(0o277)  # even a umask that would make it read-only: the mode is exact
    try:
        path = pki.write_private_key(tmp_path / "ca.key", authority[0])
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (
        serialization.load_pem_private_key(path.read_bytes(), None).public_key() == authority[0].public_key()
    )
    with pytest.raises(OptionError, match="already exists"):
        pki.write_private_file(path, b"other")
    assert serialization.load_pem_private_key(path.read_bytes(), None)
    folder = pki.make_private_folder(tmp_path / "private")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    cert = pki.write_certificate(tmp_path / "ca.crt", authority[1])
    assert x509.load_pem_x509_certificate(cert.read_bytes()) == authority[1]


def test_ip_and_dns_names_are_told_apart():
    assert isinstance(pki.subject_alternative_name("192.168.1.2"), x509.IPAddress)
    assert isinstance(pki.subject_alternative_name("fe80::1"), x509.IPAddress)
    assert isinstance(pki.subject_alternative_name("server.local"), x509.DNSName)
    assert pki.subject_alternative_name("localhost") == x509.DNSName("localhost")
