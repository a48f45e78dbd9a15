"""kazoo over the secure client port, with the JKS stores and zoo.cfg keys kazoo's own harness writes.

Runs against zkpy or (ZKPY_TEST_SERVER=apache) Apache ZooKeeper 3.8 as the reference: a client
presenting a certificate from the trusted CA gets a session, one without is refused, and neither
a refused handshake nor plain text on the TLS port costs anything but that connection.
"""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from suite_settings import CLIENT_TIMEOUT, SERVER_KIND

from zkpy.testing.procs import ServerProcess, four_letter, free_port, running_server

jks = pytest.importorskip("jks")
pytest.importorskip("cryptography")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

PASSWORD = "apassword"
PLAIN_CONNECT = b"\x00\x00\x00\x2c" + bytes(44)  # a ConnectRequest frame: what a non-TLS client sends first


def _issue(cn: str, issuer: tuple[rsa.RSAPrivateKey, x509.Certificate] | None, ca: bool = False):  # type: ignore[no-untyped-def]
    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[1].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return key, builder.sign(issuer[0] if issuer else key, hashes.SHA256())


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass
class TlsServer:
    server: ServerProcess
    secure_port: int
    ca_file: Path
    cert_file: Path
    key_file: Path

    def client(self, **kw: object) -> KazooClient:
        return KazooClient(
            hosts=f"127.0.0.1:{self.secure_port}",
            timeout=CLIENT_TIMEOUT,
            use_ssl=True,
            ca=str(self.ca_file),
            **kw,  # type: ignore[arg-type]
        )

    def raw_context(self, with_cert: bool) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.load_verify_locations(self.ca_file)
        if with_cert:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """A server whose zoo.cfg has kazoo's harness settings: JKS stores, clientAuth left at `need`."""
    home = tmp_path_factory.mktemp("tls")
    ca_key, ca_cert = _issue("ca.kazoo.org", None, ca=True)
    server_key, server_cert = _issue("localhost", (ca_key, ca_cert))
    client_key, client_cert = _issue("client", (ca_key, ca_cert))
    raw_key = server_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    keystore = jks.KeyStore.new(
        "jks", [jks.PrivateKeyEntry.new("server cert", [_der(server_cert)], raw_key, "rsa_raw")]
    )
    truststore = jks.KeyStore.new("jks", [jks.TrustedCertEntry.new("kazoo ca", _der(ca_cert))])
    keystore.save(str(home / "keystore.jks"), PASSWORD)
    truststore.save(str(home / "truststore.jks"), PASSWORD)
    ca_file, cert_file, key_file = home / "ca.pem", home / "client.pem", home / "client-key.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        client_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    secure_port = free_port()
    extra = {
        "secureClientPort": str(secure_port),
        "serverCnxnFactory": "org.apache.zookeeper.server.NettyServerCnxnFactory",  # Apache needs Netty for TLS
        "ssl.keyStore.location": str(home / "keystore.jks"),
        "ssl.keyStore.password": PASSWORD,
        "ssl.trustStore.location": str(home / "truststore.jks"),
        "ssl.trustStore.password": PASSWORD,
    }
    with running_server(SERVER_KIND, extra) as server:
        yield TlsServer(server, secure_port, ca_file, cert_file, key_file)


@contextlib.contextmanager
def _started(client: KazooClient) -> Iterator[KazooClient]:
    client.start(timeout=CLIENT_TIMEOUT)
    try:
        yield client
    finally:
        client.stop()
        client.close()


def test_kazoo_with_client_certificate_gets_a_session(tls_server: TlsServer) -> None:
    with _started(
        tls_server.client(certfile=str(tls_server.cert_file), keyfile=str(tls_server.key_file))
    ) as zk:
        zk.ensure_path("/tls")
        path = zk.create("/tls/node-", b"over tls", sequence=True)
        assert zk.get(path)[0] == b"over tls"
    # The same tree behind the plain port.
    with _started(KazooClient(hosts=tls_server.server.hosts, timeout=CLIENT_TIMEOUT)) as plain:
        assert plain.get(path)[0] == b"over tls"


def _exchange(tls_server: TlsServer, context: ssl.SSLContext) -> bytes:
    """Handshake, send the start of a ConnectRequest frame, read what comes back."""
    raw = socket.create_connection(("127.0.0.1", tls_server.secure_port), timeout=10)
    with context.wrap_socket(raw) as tls:
        tls.sendall(PLAIN_CONNECT)
        return tls.recv(100)


def test_client_without_certificate_is_refused(tls_server: TlsServer) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _exchange(tls_server, tls_server.raw_context(with_cert=False))


def test_failed_handshakes_cost_only_their_connection(tls_server: TlsServer) -> None:
    for _ in range(3):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _exchange(tls_server, tls_server.raw_context(with_cert=False))
        # Plain text on the TLS port: the server hangs up (perhaps after a TLS alert).
        with socket.create_connection(("127.0.0.1", tls_server.secure_port), timeout=10) as raw:
            raw.sendall(PLAIN_CONNECT)
            with contextlib.suppress(ConnectionError):
                while raw.recv(100):  # a socket.timeout here means the server kept the connection
                    pass
    server = tls_server.server
    assert four_letter(server.host, server.port, "ruok") == "imok"
    with _started(
        tls_server.client(certfile=str(tls_server.cert_file), keyfile=str(tls_server.key_file))
    ) as zk:
        assert zk.exists("/") is not None
