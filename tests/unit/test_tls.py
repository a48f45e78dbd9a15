"""The secure client port's TLS context, from the ssl.* keys an Apache ZooKeeper zoo.cfg carries.

Certificates are made at test time as kazoo's harness makes them (a CA, a server and a client
certificate) and stored as JKS, PKCS12 and PEM; each context is tried in a real TLS handshake
over loopback, with trio's SSL streams as the server will use them.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

jks = pytest.importorskip("jks")
pytest.importorskip("cryptography")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from cryptography.hazmat.primitives.serialization import pkcs12  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from zkpy.server.config import parse_config  # noqa: E402
from zkpy.server.tls import TlsConfigError, openssl_cipher_name, server_ssl_context  # noqa: E402

PASSWORD = "apassword"


@dataclass
class Identity:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def key_der(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, password: str | None = None) -> bytes:
        encryption = (
            serialization.BestAvailableEncryption(password.encode())
            if password
            else serialization.NoEncryption()
        )
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )


def _issue(cn: str, issuer: Identity | None, *, ca: bool = False, rsa_key: bool = False) -> Identity:
    key = rsa.generate_private_key(65537, 2048) if rsa_key else ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    signer = issuer.key if issuer else key
    return Identity(key, builder.sign(signer, hashes.SHA256()))


@dataclass
class Pki:
    ca: Identity
    server: Identity
    client: Identity
    stranger: Identity  # signed by a CA the server does not trust


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = _issue("ca.kazoo.org", None, ca=True)
    other_ca = _issue("other-ca", None, ca=True)
    return Pki(
        ca=ca,
        server=_issue("localhost", ca, rsa_key=True),  # RSA, as kazoo's harness makes it
        client=_issue("client", ca),
        stranger=_issue("stranger", other_ca),
    )


def _write_jks(pki: Pki, directory: Path, password: str = PASSWORD) -> tuple[Path, Path]:
    """A keystore and truststore as kazoo's harness writes them (pyjks, RSA key in raw PKCS#1 form)."""
    raw_rsa = pki.server.key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    keystore = jks.KeyStore.new(
        "jks", [jks.PrivateKeyEntry.new("server cert", [pki.server.cert_der()], raw_rsa, "rsa_raw")]
    )
    truststore = jks.KeyStore.new("jks", [jks.TrustedCertEntry.new("kazoo ca", pki.ca.cert_der())])
    keystore_path, truststore_path = directory / "keystore.jks", directory / "truststore.jks"
    keystore.save(str(keystore_path), password)
    truststore.save(str(truststore_path), password)
    return keystore_path, truststore_path


def _config(tmp_path: Path, **ssl_keys: str):  # type: ignore[no-untyped-def]
    lines = [f"dataDir={tmp_path / 'data'}", "clientPort=2181", "secureClientPort=2281"]
    lines += [f"{key}={value}" for key, value in ssl_keys.items()]
    return parse_config("\n".join(lines) + "\n", tmp_path)


def _jks_config(pki: Pki, tmp_path: Path, **more: str):  # type: ignore[no-untyped-def]
    keystore, truststore = _write_jks(pki, tmp_path)
    keys = {
        "ssl.keyStore.location": str(keystore),
        "ssl.keyStore.password": PASSWORD,
        "ssl.trustStore.location": str(truststore),
        "ssl.trustStore.password": PASSWORD,
    }
    keys.update(more)
    return _config(tmp_path, **keys)


def _client_context(pki: Pki, identity: Identity | None, tmp_path: Path) -> ssl.SSLContext:
    """A client like kazoo's: trusts the CA, presents `identity` if given, no hostname check."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=pki.ca.cert_pem().decode())
    if identity is not None:
        cert_file, key_file = tmp_path / "client-cert.pem", tmp_path / "client-key.pem"
        cert_file.write_bytes(identity.cert_pem())
        key_file.write_bytes(identity.key_pem())
        context.load_cert_chain(cert_file, key_file)
    return context


@dataclass
class Outcome:
    echoed: bytes
    version: str | None
    peer_cert: dict | None  # what the server saw of the client's certificate


async def _handshake(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> Outcome:
    """Serve one TLS connection that echoes a line; connect, send, and read the echo back.

    Raises trio.BrokenResourceError when the handshake fails (for either side).
    """
    seen: dict[str, object] = {}

    async def serve_one(stream: trio.SSLStream) -> None:
        try:
            data = await stream.receive_some(100)
            seen["version"] = stream.version()
            seen["peer"] = stream.getpeercert()
            await stream.send_all(data)
        except trio.BrokenResourceError:
            pass  # a refused handshake costs this connection only
        finally:
            await trio.aclose_forcefully(stream)

    listeners = await trio.open_ssl_over_tcp_listeners(0, server_context, host="127.0.0.1")
    port = listeners[0].transport_listener.socket.getsockname()[1]
    echoed = b""
    failure: trio.BrokenResourceError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve_one, listeners)
        try:
            with trio.fail_after(10):
                client = await trio.open_ssl_over_tcp_stream(
                    "127.0.0.1", port, ssl_context=client_context, https_compatible=True
                )
                async with client:
                    await client.send_all(b"ruok\n")
                    while len(echoed) < 5:
                        chunk = await client.receive_some(100)
                        if not chunk:
                            raise trio.BrokenResourceError("server closed the connection")
                        echoed += chunk
        except trio.BrokenResourceError as e:
            failure = e  # raised below, outside the nursery (which would wrap it in a group)
        finally:
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return Outcome(echoed, seen.get("version"), seen.get("peer"))  # type: ignore[arg-type]


# --- handshakes -------------------------------------------------------------------------------------


async def test_jks_stores_accept_a_client_with_a_certificate(pki: Pki, tmp_path: Path) -> None:
    context = server_ssl_context(_jks_config(pki, tmp_path))
    assert context is not None
    outcome = await _handshake(context, _client_context(pki, pki.client, tmp_path))
    assert outcome.echoed == b"ruok\n"
    assert outcome.version == "TLSv1.2"  # ZooKeeper 3.8's default ssl.protocol
    assert outcome.peer_cert is not None
    assert (("commonName", "client"),) in outcome.peer_cert["subject"]


async def test_client_without_certificate_refused_by_default(pki: Pki, tmp_path: Path) -> None:
    context = server_ssl_context(_jks_config(pki, tmp_path))  # ssl.clientAuth unset means need
    assert context is not None
    with pytest.raises(trio.BrokenResourceError):
        await _handshake(context, _client_context(pki, None, tmp_path))


async def test_client_certificate_from_an_untrusted_ca_refused(pki: Pki, tmp_path: Path) -> None:
    context = server_ssl_context(_jks_config(pki, tmp_path))
    assert context is not None
    with pytest.raises(trio.BrokenResourceError):
        await _handshake(context, _client_context(pki, pki.stranger, tmp_path))


@pytest.mark.parametrize("mode", ["want", "none", "NONE"])
async def test_client_auth_want_or_none_lets_a_client_without_certificate_in(
    pki: Pki, tmp_path: Path, mode: str
) -> None:
    context = server_ssl_context(_jks_config(pki, tmp_path, **{"ssl.clientAuth": mode}))
    assert context is not None
    outcome = await _handshake(context, _client_context(pki, None, tmp_path))
    assert outcome.echoed == b"ruok\n"
    assert not outcome.peer_cert


async def test_client_auth_want_still_verifies_a_presented_certificate(pki: Pki, tmp_path: Path) -> None:
    context = server_ssl_context(_jks_config(pki, tmp_path, **{"ssl.clientAuth": "want"}))
    assert context is not None
    with pytest.raises(trio.BrokenResourceError):
        await _handshake(context, _client_context(pki, pki.stranger, tmp_path))


async def test_enabled_protocols_tls13(pki: Pki, tmp_path: Path) -> None:
    config = _jks_config(pki, tmp_path, **{"ssl.enabledProtocols": "TLSv1.3"})
    context = server_ssl_context(config)
    assert context is not None
    outcome = await _handshake(context, _client_context(pki, pki.client, tmp_path))
    assert outcome.version == "TLSv1.3"


async def test_client_limited_to_tls13_refused_by_the_default_tls12(pki: Pki, tmp_path: Path) -> None:
    context = server_ssl_context(_jks_config(pki, tmp_path))
    assert context is not None
    client = _client_context(pki, pki.client, tmp_path)
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    with pytest.raises(trio.BrokenResourceError):
        await _handshake(context, client)


async def test_pkcs12_stores_by_extension(pki: Pki, tmp_path: Path) -> None:
    keystore, truststore = tmp_path / "keystore.p12", tmp_path / "truststore.pfx"
    encryption = serialization.BestAvailableEncryption(PASSWORD.encode())
    keystore.write_bytes(
        pkcs12.serialize_key_and_certificates(b"server", pki.server.key, pki.server.cert, None, encryption)
    )
    truststore.write_bytes(
        pkcs12.serialize_key_and_certificates(b"ca", None, None, [pki.ca.cert], encryption)
    )
    config = _config(
        tmp_path,
        **{
            "ssl.keyStore.location": str(keystore),
            "ssl.keyStore.password": PASSWORD,
            "ssl.trustStore.location": str(truststore),
            "ssl.trustStore.password": PASSWORD,
        },
    )
    context = server_ssl_context(config)
    assert context is not None
    assert (await _handshake(context, _client_context(pki, pki.client, tmp_path))).echoed == b"ruok\n"


async def test_pem_stores_with_encrypted_key_and_zookeeper_prefixed_keys(pki: Pki, tmp_path: Path) -> None:
    keystore, truststore = tmp_path / "server.pem", tmp_path / "ca.pem"
    keystore.write_bytes(pki.server.key_pem(PASSWORD) + pki.server.cert_pem())
    truststore.write_bytes(pki.ca.cert_pem())
    password_file = tmp_path / "keystore.pass"
    password_file.write_text(PASSWORD + "\n")
    config = _config(
        tmp_path,
        **{
            "zookeeper.ssl.keyStore.location": str(keystore),
            "zookeeper.ssl.keyStore.passwordPath": str(password_file),
            "zookeeper.ssl.trustStore.location": str(truststore),
        },
    )
    context = server_ssl_context(config)
    assert context is not None
    assert (await _handshake(context, _client_context(pki, pki.client, tmp_path))).echoed == b"ruok\n"


async def test_jks_type_key_overrides_the_extension(pki: Pki, tmp_path: Path) -> None:
    keystore, truststore = _write_jks(pki, tmp_path)
    keystore = keystore.rename(tmp_path / "keystore.bin")
    config = _config(
        tmp_path,
        **{
            "ssl.keyStore.location": str(keystore),
            "ssl.keyStore.password": PASSWORD,
            "ssl.keyStore.type": "jks",
            "ssl.trustStore.location": str(truststore),
            "ssl.trustStore.password": PASSWORD,
        },
    )
    assert server_ssl_context(config) is not None


def test_no_secure_port_means_no_context(tmp_path: Path) -> None:
    config = parse_config(f"dataDir={tmp_path}\nclientPort=2181\n", tmp_path)
    assert server_ssl_context(config) is None


def test_converted_key_files_are_removed(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    assert server_ssl_context(_jks_config(pki, tmp_path)) is not None
    assert list(scratch.iterdir()) == []


# --- errors -----------------------------------------------------------------------------------------


def _error(config) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(TlsConfigError) as info:
        server_ssl_context(config)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_wrong_keystore_password(pki: Pki, tmp_path: Path) -> None:
    message = _error(_jks_config(pki, tmp_path, **{"ssl.keyStore.password": "wrong"}))
    assert "ssl.keyStore.password" in message
    assert "keystore.jks" in message


def test_wrong_truststore_password(pki: Pki, tmp_path: Path) -> None:
    message = _error(_jks_config(pki, tmp_path, **{"ssl.trustStore.password": "wrong"}))
    assert "ssl.trustStore.password" in message


def test_wrong_pkcs12_password(pki: Pki, tmp_path: Path) -> None:
    keystore = tmp_path / "keystore.p12"
    keystore.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"server",
            pki.server.key,
            pki.server.cert,
            None,
            serialization.BestAvailableEncryption(PASSWORD.encode()),
        )
    )
    config = _config(tmp_path, **{"ssl.keyStore.location": str(keystore), "ssl.keyStore.password": "nope"})
    assert "wrong ssl.keyStore.password" in _error(config)


def test_wrong_pem_key_password(pki: Pki, tmp_path: Path) -> None:
    keystore = tmp_path / "server.pem"
    keystore.write_bytes(pki.server.key_pem(PASSWORD) + pki.server.cert_pem())
    config = _config(tmp_path, **{"ssl.keyStore.location": str(keystore), "ssl.keyStore.password": "nope"})
    assert "wrong ssl.keyStore.password" in _error(config)


def test_missing_keystore_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "keystore.jks"
    config = _config(tmp_path, **{"ssl.keyStore.location": str(missing), "ssl.keyStore.password": "x"})
    assert _error(config) == f"ssl.keyStore.location {missing}: file not found"


def test_missing_truststore_file(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "truststore.jks"
    config = _jks_config(pki, tmp_path)
    missing.unlink()
    assert _error(config) == f"ssl.trustStore.location {missing}: file not found"


def test_keystore_without_private_key(pki: Pki, tmp_path: Path) -> None:
    _, truststore = _write_jks(pki, tmp_path)
    config = _config(
        tmp_path, **{"ssl.keyStore.location": str(truststore), "ssl.keyStore.password": PASSWORD}
    )
    assert "no private key" in _error(config)


def test_pem_keystore_without_private_key(pki: Pki, tmp_path: Path) -> None:
    keystore = tmp_path / "cert-only.pem"
    keystore.write_bytes(pki.server.cert_pem())
    assert "holds no private key" in _error(_config(tmp_path, **{"ssl.keyStore.location": str(keystore)}))


def test_key_not_matching_certificate(pki: Pki, tmp_path: Path) -> None:
    keystore = tmp_path / "mixed.pem"
    keystore.write_bytes(pki.client.key_pem() + pki.server.cert_pem())
    message = _error(_config(tmp_path, **{"ssl.keyStore.location": str(keystore)}))
    assert "does not match" in message


def test_secure_port_without_keystore(tmp_path: Path) -> None:
    assert "ssl.keyStore.location is not" in _error(_config(tmp_path))


def test_unknown_extension_needs_a_type(tmp_path: Path) -> None:
    config = _config(tmp_path, **{"ssl.keyStore.location": str(tmp_path / "store.bin")})
    assert "ssl.keyStore.type" in _error(config)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ssl.clientAuth", "sometimes"),
        ("ssl.protocol", "SSLv3"),
        ("ssl.enabledProtocols", "TLSv1.2,TLSv9"),
        ("ssl.keyStore.type", "JCEKS2"),
    ],
)
def test_bad_values_name_their_key(pki: Pki, tmp_path: Path, key: str, value: str) -> None:
    assert _error(_jks_config(pki, tmp_path, **{key: value})).startswith(f"{key}:")


def test_missing_pyjks_is_explained(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _jks_config(pki, tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "jks", None)
    assert "reading a JKS keystore needs the pyjks package" in _error(config)


# --- cipher suites ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("java", "openssl"),
    [
        ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
        ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", "ECDHE-ECDSA-AES256-SHA384"),
        ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA"),
        ("TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", "DHE-RSA-AES256-GCM-SHA384"),
        ("TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA256"),
        ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"),
        ("TLS_AES_128_GCM_SHA256", None),
        ("SSL_RSA_WITH_RC4_128_MD5", None),
    ],
)
def test_cipher_suite_names(java: str, openssl: str | None) -> None:
    assert openssl_cipher_name(java) == openssl


async def test_ciphersuites_restrict_the_handshake(pki: Pki, tmp_path: Path) -> None:
    config = _jks_config(pki, tmp_path, **{"ssl.ciphersuites": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,BOGUS"})
    context = server_ssl_context(config)
    assert context is not None
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == ["ECDHE-RSA-AES256-GCM-SHA384"]
    assert (await _handshake(context, _client_context(pki, pki.client, tmp_path))).echoed == b"ruok\n"
