"""The TLS context for the secure client port, built from ZooKeeper 3.8's `ssl.*` keys.

An operator's zoo.cfg (and kazoo's test harness) names a Java keystore and truststore:
JKS, PKCS12 or PEM files with a password. Python's ssl module only loads PEM files, so
this module reads those stores, converts what it must to PEM, and applies ZooKeeper's
rules and defaults: the store type from `ssl.*.type` or else the file extension, client
certificates required unless `ssl.clientAuth` says otherwise, `ssl.protocol` TLSv1.2 as the
only enabled protocol unless `ssl.enabledProtocols` lists others, and ZooKeeper's default
cipher suites. Every problem is one TlsConfigError line naming the key or file at fault.

The private key ends up on disk only for the instant `SSLContext.load_cert_chain` needs a
file: in a fresh 0700 directory that is removed right after loading.
"""

from __future__ import annotations

import base64
import logging
import re
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zkpy.server.config import ServerConfig

log = logging.getLogger(__name__)

_JKS_MAGIC = (b"\xfe\xed\xfe\xed", b"\xce\xce\xce\xce")  # JKS, JCEKS

# ZooKeeper's X509Util default cipher suites on Java 9+ (GCM first), in Java's (IANA) names.
DEFAULT_CIPHER_SUITES = (
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
)
DEFAULT_PROTOCOL = "TLSv1.2"  # X509Util.DEFAULT_PROTOCOL in ZooKeeper 3.8.0

_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH = {"none": ssl.CERT_NONE, "want": ssl.CERT_OPTIONAL, "need": ssl.CERT_REQUIRED}
_STORE_TYPES = {".jks": "JKS", ".pem": "PEM", ".p12": "PKCS12", ".pfx": "PKCS12", ".bcfks": "BCFKS"}

_IANA_SUITE = re.compile(
    r"TLS_(ECDHE_ECDSA|ECDHE_RSA|DHE_RSA|RSA)_WITH_(AES_(?:128|256)_(?:GCM|CBC)|CHACHA20_POLY1305)_(SHA|SHA256|SHA384)"
)
_OPENSSL_EXCHANGE = {
    "ECDHE_ECDSA": "ECDHE-ECDSA-",
    "ECDHE_RSA": "ECDHE-RSA-",
    "DHE_RSA": "DHE-RSA-",
    "RSA": "",
}
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)


class TlsConfigError(Exception):
    """The ssl.* settings cannot give a working TLS context; str() is one line for the operator."""


@dataclass(frozen=True, slots=True)
class _Store:
    """One keystore or truststore setting: `ssl.keyStore` or `ssl.trustStore`."""

    key: str  # "ssl.keyStore" / "ssl.trustStore"
    path: Path
    password: str | None
    kind: str  # JKS, PKCS12 or PEM

    def fail(self, problem: str) -> TlsConfigError:
        return TlsConfigError(f"{self.key}.location {self.path}: {problem}")

    def read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            raise self.fail("file not found") from None
        except OSError as e:
            raise self.fail(f"cannot read: {e.strerror or e}") from None


def server_ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The server-side context for `secureClientPort`, or None when that port is not set.

    Raises TlsConfigError when the port is set but the keys do not give a usable context.
    """
    if config.secure_client_port is None:
        return None
    extra = config.extra
    keystore = _store(extra, "ssl.keyStore")
    if keystore is None:
        raise TlsConfigError("secureClientPort is set but ssl.keyStore.location is not")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _set_protocols(context, extra)
    _set_ciphers(context, extra.get("ssl.ciphersuites"))
    context.options |= ssl.OP_NO_RENEGOTIATION  # as ZooKeeper's rejectClientInitiatedRenegotiation
    _load_keystore(context, keystore)

    truststore = _store(extra, "ssl.trustStore")
    if truststore is None:
        context.load_default_certs(ssl.Purpose.CLIENT_AUTH)  # Java's default trust (cacerts)
    else:
        certs = _trusted_certs(truststore)
        if not certs:
            raise truststore.fail("contains no trusted certificates")
        try:
            context.load_verify_locations(cadata="".join(ssl.DER_cert_to_PEM_cert(c) for c in certs))
        except ssl.SSLError as e:
            raise truststore.fail(f"unusable certificate ({e.reason or e})") from None

    raw_auth = (extra.get("ssl.clientAuth") or "need").strip()
    if raw_auth.lower() not in _CLIENT_AUTH:
        raise TlsConfigError(f"ssl.clientAuth: {raw_auth!r} is not one of none, want, need")
    context.verify_mode = _CLIENT_AUTH[raw_auth.lower()]

    for flag in ("ssl.crl", "ssl.ocsp"):
        if (extra.get(flag) or "").strip().lower() == "true":
            log.warning(
                "%s=true is not supported by zkpy; client certificates are not checked for revocation", flag
            )
    if extra.get("ssl.context.supplier.class"):
        log.warning("ssl.context.supplier.class names a Java class; zkpy ignores it")
    return context


# --- settings ---------------------------------------------------------------------------------------


def _password(extra: dict[str, str], key: str) -> str | None:
    """`<key>.password`, else the contents of `<key>.passwordPath` (less one trailing newline)."""
    if extra.get(f"{key}.password"):
        return extra[f"{key}.password"]
    path = extra.get(f"{key}.passwordPath")
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise TlsConfigError(f"{key}.passwordPath {path}: cannot read: {e.strerror or e}") from None
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def _store(extra: dict[str, str], key: str) -> _Store | None:
    location = (extra.get(f"{key}.location") or "").strip()
    if not location:
        return None
    path = Path(location).expanduser()
    raw_type = (extra.get(f"{key}.type") or "").strip()
    if raw_type:
        kind = raw_type.upper()
        if kind not in ("JKS", "PKCS12", "PEM", "BCFKS"):
            raise TlsConfigError(f"{key}.type: {raw_type!r} is not one of JKS, PKCS12, PEM")
    else:
        kind = _STORE_TYPES.get(path.suffix.lower(), "")
        if not kind:
            raise TlsConfigError(
                f"{key}.location {path}: cannot tell the store type from the file name "
                f"(use .jks, .p12, .pfx or .pem, or set {key}.type)"
            )
    if kind == "BCFKS":
        raise TlsConfigError(f"{key}.type: BCFKS stores are not supported; convert to PKCS12 or PEM")
    return _Store(key, path, _password(extra, key), kind)


def _set_protocols(context: ssl.SSLContext, extra: dict[str, str]) -> None:
    """ZooKeeper enables exactly ssl.enabledProtocols, or else just ssl.protocol."""
    raw = extra.get("ssl.enabledProtocols") or extra.get("ssl.protocol") or DEFAULT_PROTOCOL
    key = "ssl.enabledProtocols" if extra.get("ssl.enabledProtocols") else "ssl.protocol"
    names = [n.strip() for n in raw.split(",") if n.strip()]
    versions: list[ssl.TLSVersion] = []
    for name in names:
        if name == "TLS":  # Java's generic name: whatever the runtime supports
            versions += [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
        elif name in _VERSIONS:
            versions.append(_VERSIONS[name])
        else:
            raise TlsConfigError(f"{key}: {name!r} is not one of TLSv1.2, TLSv1.3 (or TLSv1, TLSv1.1)")
    if not versions:
        raise TlsConfigError(f"{key}: no protocol given")
    try:
        context.minimum_version = min(versions)
        context.maximum_version = max(versions)
    except (ValueError, ssl.SSLError) as e:
        raise TlsConfigError(f"{key}: {raw!r} is not supported by this OpenSSL ({e})") from None


def openssl_cipher_name(iana: str) -> str | None:
    """Java's (IANA) name of a TLS 1.2 cipher suite as OpenSSL spells it, or None if unknown.

    TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 -> ECDHE-RSA-AES128-GCM-SHA256,
    TLS_RSA_WITH_AES_256_CBC_SHA -> AES256-SHA. TLS 1.3 suites (TLS_AES_128_GCM_SHA256)
    cannot be chosen through Python's ssl module and give None.
    """
    m = _IANA_SUITE.fullmatch(iana.strip())
    if m is None:
        return None
    exchange, cipher, mac = m.groups()
    prefix = _OPENSSL_EXCHANGE[exchange]
    if cipher == "CHACHA20_POLY1305":
        return f"{prefix}CHACHA20-POLY1305"
    _, bits, mode = cipher.split("_")
    if mode == "GCM":
        return f"{prefix}AES{bits}-GCM-{mac}"
    return f"{prefix}AES{bits}-{mac}"


def _set_ciphers(context: ssl.SSLContext, raw: str | None) -> None:
    """ssl.ciphersuites (or ZooKeeper's defaults), translated; unknown names are warned about and skipped."""
    names = [n.strip() for n in raw.split(",") if n.strip()] if raw else list(DEFAULT_CIPHER_SUITES)
    usable: list[str] = []
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for name in names:
        openssl_name = openssl_cipher_name(name)
        if openssl_name is not None:
            try:
                probe.set_ciphers(openssl_name)
            except ssl.SSLError:
                openssl_name = None
        if openssl_name is None:
            if raw:
                log.warning("ssl.ciphersuites: %s is not available here; ignored", name)
            continue
        usable.append(openssl_name)
    if not usable:
        if raw:
            log.warning("ssl.ciphersuites: none of the listed suites is available; using OpenSSL's defaults")
        return
    context.set_ciphers(":".join(usable))


# --- stores -----------------------------------------------------------------------------------------


def _pem(label: str, der: bytes) -> str:
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def _is_jks(data: bytes) -> bool:
    return data[:4] in _JKS_MAGIC


def _load_keystore(context: ssl.SSLContext, store: _Store) -> None:
    data = store.read()
    if store.kind == "PEM":
        _load_pem_keystore(context, store, data)
        return
    # Like Java's JKS/PKCS12 keystores (keystore.type.compat), read either format whichever was named.
    key_pem, chain_pem = _jks_key(store, data) if _is_jks(data) else _pkcs12_key(store, data)
    workdir = Path(tempfile.mkdtemp(prefix="zkpy-tls-"))  # mode 0700
    try:
        key_file, chain_file = workdir / "key.pem", workdir / "chain.pem"
        key_file.touch(mode=0o600)
        key_file.write_text(key_pem, encoding="ascii")
        chain_file.write_text(chain_pem, encoding="ascii")
        _load_chain(context, store, chain_file, key_file, None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _load_chain(
    context: ssl.SSLContext,
    store: _Store,
    certfile: Path,
    keyfile: Path | None,
    password: str | None,
    *,
    key_encrypted: bool = False,
) -> None:
    try:
        # An empty (not None) password: an encrypted key must never make OpenSSL prompt on the terminal.
        context.load_cert_chain(certfile, keyfile, password=password or "")
    except ssl.SSLError as e:
        reason = (e.reason or str(e)).upper()
        if "MISMATCH" in reason or "NO_CERTIFICATE_ASSIGNED" in reason:
            raise store.fail("the private key does not match the certificate") from None
        if key_encrypted or "DECRYPT" in reason or "BAD PASSWORD" in reason:
            which = "wrong" if password else "missing"
            raise store.fail(f"cannot decrypt the private key: {which} {store.key}.password") from None
        raise store.fail(f"unusable key or certificate ({e.reason or e})") from None


def _load_pem_keystore(context: ssl.SSLContext, store: _Store, data: bytes) -> None:
    labels = [m.group(1).decode() for m in _PEM_BLOCK.finditer(data)]
    if not any(label.endswith("PRIVATE KEY") for label in labels):
        raise store.fail("holds no private key")
    if "CERTIFICATE" not in labels:
        raise store.fail("holds no certificate")
    encrypted = "ENCRYPTED PRIVATE KEY" in labels or b"Proc-Type: 4,ENCRYPTED" in data
    _load_chain(context, store, store.path, None, store.password, key_encrypted=encrypted)


def _require_pyjks(store: _Store):  # type: ignore[no-untyped-def]
    try:
        import jks  # type: ignore[import-untyped]
    except ImportError:
        raise store.fail("reading a JKS keystore needs the pyjks package (pip install pyjks)") from None
    return jks


def _load_jks(store: _Store, data: bytes):  # type: ignore[no-untyped-def]
    jks = _require_pyjks(store)
    try:
        return jks.KeyStore.loads(data, store.password or None)
    except jks.util.KeystoreSignatureException:
        raise store.fail(f"wrong {store.key}.password (keystore integrity check failed)") from None
    except jks.util.KeystoreException as e:
        raise store.fail(f"not a readable JKS keystore ({e})") from None


def _jks_key(store: _Store, data: bytes) -> tuple[str, str]:
    keystore = _load_jks(store, data)
    entries = list(keystore.private_keys.values())
    if not entries:
        raise store.fail("holds no private key entry")
    if len(entries) > 1:
        log.warning(
            "%s.location %s: %d private keys; using %r", store.key, store.path, len(entries), entries[0].alias
        )
    entry = entries[0]
    if not entry.is_decrypted():
        try:
            entry.decrypt(store.password or "")
        except Exception:
            raise store.fail(
                f"cannot decrypt private key {entry.alias!r}: wrong {store.key}.password"
            ) from None
    chain = "".join(ssl.DER_cert_to_PEM_cert(der) for _, der in entry.cert_chain)
    if not chain:
        raise store.fail(f"private key {entry.alias!r} has no certificate")
    return _pem("PRIVATE KEY", entry.pkey_pkcs8), chain


def _require_pkcs12(store: _Store):  # type: ignore[no-untyped-def]
    try:
        from cryptography.hazmat.primitives.serialization import pkcs12
    except ImportError:
        raise store.fail(
            "reading a PKCS12 store needs the cryptography package (pip install cryptography)"
        ) from None
    return pkcs12


def _load_pkcs12(store: _Store, data: bytes):  # type: ignore[no-untyped-def]
    pkcs12 = _require_pkcs12(store)
    password = store.password.encode() if store.password else None
    try:
        return pkcs12.load_pkcs12(data, password)
    except ValueError:
        if password is None:
            raise store.fail(f"not a readable PKCS12 store, or {store.key}.password is missing") from None
        raise store.fail(f"wrong {store.key}.password, or not a PKCS12 store") from None


def _pkcs12_key(store: _Store, data: bytes) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization

    bundle = _load_pkcs12(store, data)
    if bundle.key is None:
        raise store.fail("holds no private key")
    if bundle.cert is None:
        raise store.fail("holds no certificate for its private key")
    key_pem = bundle.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    certs = [bundle.cert.certificate, *(c.certificate for c in bundle.additional_certs)]
    chain = "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)
    return key_pem, chain


def _trusted_certs(store: _Store) -> list[bytes]:
    """DER certificates a truststore trusts (JKS: its trusted-certificate entries, as Java's PKIX)."""
    data = store.read()
    if store.kind == "PEM":
        blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data) if m.group(1) == b"CERTIFICATE"]
        try:
            return [ssl.PEM_cert_to_DER_cert(b.decode("ascii")) for b in blocks]
        except ValueError as e:
            raise store.fail(f"malformed certificate ({e})") from None
    if _is_jks(data):
        return [entry.cert for entry in _load_jks(store, data).certs.values()]
    from cryptography.hazmat.primitives import serialization

    bundle = _load_pkcs12(store, data)
    certs = [c.certificate for c in bundle.additional_certs]
    if bundle.cert is not None:
        certs.insert(0, bundle.cert.certificate)
    return [c.public_bytes(serialization.Encoding.DER) for c in certs]


__all__ = [
    "DEFAULT_CIPHER_SUITES",
    "DEFAULT_PROTOCOL",
    "TlsConfigError",
    "openssl_cipher_name",
    "server_ssl_context",
]
