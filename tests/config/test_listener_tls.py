"""`proxy.tls`: the schema, and the certificate and key files checked by the semantic pass
(config/certificates.py), each problem at the key path of the file at fault."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from pxproxy.config.certificates import read_certificate_pair
from pxproxy.config.listener_tls import CertificateFiles

from ..certificates import DAY, NOW, TestCa
from .helpers import MINIMAL, parse, problems_of


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa()


def with_tls(*entries: tuple[str | Path, str | Path], extra: str = "") -> str:
    lines = "".join(f"      - {{cert: '{cert}', key: '{key}'}}\n" for cert, key in entries)
    return MINIMAL + "proxy:\n  tls:\n    certificates:\n" + lines + extra


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_valid_entry_and_the_defaults(ca: TestCa, tmp_path: Path) -> None:
    files = ca.issue("wiki.t.test").write(tmp_path, "wiki")
    config = parse(with_tls((files.cert, files.key)))
    assert config.proxy.tls is not None
    assert config.proxy.tls.certificates == (files,)
    assert config.proxy.tls.min_version == "1.2"
    assert parse(MINIMAL).proxy.tls is None


def test_min_version_written_as_a_yaml_number(ca: TestCa, tmp_path: Path) -> None:
    files = ca.issue("wiki.t.test").write(tmp_path, "wiki")
    config = parse(with_tls((files.cert, files.key), extra="    min_version: 1.3\n"))
    assert config.proxy.tls is not None
    assert config.proxy.tls.min_version == "1.3"
    [line] = problems_of(with_tls((files.cert, files.key), extra="    min_version: 1.1\n"))
    assert line.startswith("proxy.tls.min_version: ")
    assert "'1.2'" in line
    assert "'1.3'" in line


def test_no_certificates_and_unknown_keys(ca: TestCa, tmp_path: Path) -> None:
    assert problems_of(MINIMAL + "proxy:\n  tls: {certificates: []}\n") == [
        "proxy.tls.certificates: needs at least one {cert, key} entry; the first is the default"
    ]
    files = ca.issue("wiki.t.test").write(tmp_path, "wiki")
    text = MINIMAL + f"proxy:\n  tls:\n    certificates: [{{cert: '{files.cert}', kye: x}}]\n"
    # The file given is checked still (this one is fine), and both key problems show.
    assert problems_of(text) == [
        "proxy.tls.certificates[0].kye: unknown key; did you mean key?",
        "proxy.tls.certificates[0].key: required, but missing",
    ]


def test_missing_files_name_their_key_path(ca: TestCa, tmp_path: Path) -> None:
    good = ca.issue("default.test").write(tmp_path, "default")
    gone_cert, gone_key = tmp_path / "gone.crt", tmp_path / "gone.key"
    assert problems_of(
        with_tls((good.cert, good.key), (good.cert, gone_key), (gone_cert, good.key))
    ) == [
        f"proxy.tls.certificates[1].key: cannot read {gone_key}: No such file or directory",
        f"proxy.tls.certificates[2].cert: cannot read {gone_cert}: No such file or directory",
    ]
    assert problems_of(with_tls((tmp_path, good.key))) == [
        f"proxy.tls.certificates[0].cert: cannot read {tmp_path}: Is a directory"
    ]


def test_a_key_of_another_certificate(ca: TestCa, tmp_path: Path) -> None:
    default = ca.issue("default.test").write(tmp_path, "default")
    wiki = ca.issue("wiki.t.test").write(tmp_path, "wiki")
    assert problems_of(with_tls((default.cert, default.key), (wiki.cert, default.key))) == [
        f"proxy.tls.certificates[1].key: {default.key} does not belong to the certificate in "
        f"{wiki.cert} (the first one there, which must be the server's own): their public "
        "keys differ"
    ]


def test_garbage_in_both_files_is_reported_in_one_pass(tmp_path: Path) -> None:
    cert = write(tmp_path / "bad.crt", b"not a certificate\n")
    key = write(
        tmp_path / "bad.key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    assert problems_of(with_tls((cert, key))) == [
        f"proxy.tls.certificates[0].cert: {cert} holds no PEM certificate (a -----BEGIN "
        "CERTIFICATE----- block)",
        f"proxy.tls.certificates[0].key: {key} holds a PEM private key block that does not parse",
    ]
    broken = write(
        tmp_path / "broken.crt", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    nokey = write(tmp_path / "nokey.key", b"hello\n")
    assert problems_of(with_tls((broken, nokey))) == [
        f"proxy.tls.certificates[0].cert: {broken} holds a PEM certificate block that does not "
        "parse",
        f"proxy.tls.certificates[0].key: {nokey} holds no PEM private key (a -----BEGIN PRIVATE "
        "KEY----- block)",
    ]


def test_an_encrypted_key(ca: TestCa, tmp_path: Path) -> None:
    leaf = ca.issue("wiki.t.test")
    files = leaf.write(tmp_path, "wiki")
    private = serialization.load_pem_private_key(leaf.key_pem, password=None)
    encrypted = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    key = write(tmp_path / "wiki.key", encrypted)
    assert problems_of(with_tls((files.cert, key))) == [
        f"proxy.tls.certificates[0].key: {key} is an encrypted private key; pxproxy needs it "
        "unencrypted"
    ]


def test_full_chain_and_combined_files(ca: TestCa, tmp_path: Path) -> None:
    leaf = ca.issue("wiki.t.test")
    chain = write(tmp_path / "fullchain.pem", leaf.cert_pem + ca.pem)
    key = write(tmp_path / "privkey.pem", leaf.key_pem)
    combined = write(tmp_path / "combined.pem", leaf.cert_pem + ca.pem + leaf.key_pem)
    config = parse(with_tls((chain, key), (combined, combined)))
    assert config.proxy.tls is not None
    # A chain written CA first: the key is checked against the first certificate.
    backwards = write(tmp_path / "backwards.pem", ca.pem + leaf.cert_pem)
    [line] = problems_of(with_tls((backwards, key)))
    assert line.startswith(f"proxy.tls.certificates[0].key: {key} does not belong to ")


def test_an_expired_certificate_is_no_config_error(ca: TestCa, tmp_path: Path) -> None:
    files = ca.issue("old.test", not_after=NOW - DAY).write(tmp_path, "old")
    config = parse(with_tls((files.cert, files.key)))
    assert config.proxy.tls is not None
    info = read_certificate_pair(CertificateFiles(cert=files.cert, key=files.key))
    assert info.names == ("old.test",)
    assert info.not_after < NOW


def test_a_file_far_too_big_is_not_read_whole(ca: TestCa, tmp_path: Path) -> None:
    files = ca.issue("wiki.t.test").write(tmp_path, "wiki")
    huge = write(tmp_path / "huge.crt", b"x" * (2 << 20))
    assert problems_of(with_tls((huge, files.key))) == [
        f"proxy.tls.certificates[0].cert: {huge} is over 1 MiB: not a PEM cert file"
    ]
