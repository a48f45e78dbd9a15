"""ZooKeeper error codes and the exception classes that carry them.

One registry maps each wire code to one exception class, so the server raises
what the wire needs and the client turns a reply's code back into a typed error.
"""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    OK = 0
    SYSTEM_ERROR = -1
    RUNTIME_INCONSISTENCY = -2
    DATA_INCONSISTENCY = -3
    CONNECTION_LOSS = -4
    MARSHALLING_ERROR = -5
    UNIMPLEMENTED = -6
    OPERATION_TIMEOUT = -7
    BAD_ARGUMENTS = -8
    UNKNOWN_SESSION = -12
    NEW_CONFIG_NO_QUORUM = -13
    RECONFIG_IN_PROGRESS = -14
    API_ERROR = -100
    NO_NODE = -101
    NO_AUTH = -102
    BAD_VERSION = -103
    NO_CHILDREN_FOR_EPHEMERALS = -108
    NODE_EXISTS = -110
    NOT_EMPTY = -111
    SESSION_EXPIRED = -112
    INVALID_CALLBACK = -113
    INVALID_ACL = -114
    AUTH_FAILED = -115
    SESSION_MOVED = -118
    NOT_READ_ONLY = -119
    EPHEMERAL_ON_LOCAL_SESSION = -120
    NO_WATCHER = -121
    REQUEST_TIMEOUT = -122
    RECONFIG_DISABLED = -123
    SESSION_CLOSED_REQUIRE_SASL = -124
    QUOTA_EXCEEDED = -125
    THROTTLED = -127


class ZooKeeperError(Exception):
    """Base of every error a ZooKeeper operation can answer with."""

    code: Code = Code.SYSTEM_ERROR

    def __init__(self, message: str = "", path: str | None = None) -> None:
        self.path = path
        text = message or self.code.name
        if path is not None:
            text = f"{text}: {path}"
        super().__init__(text)


_BY_CODE: dict[int, type[ZooKeeperError]] = {}


def _define(name: str, code: Code) -> type[ZooKeeperError]:
    cls = type(
        name, (ZooKeeperError,), {"code": code, "__doc__": f"ZooKeeper error {code.name} ({int(code)})."}
    )
    _BY_CODE[int(code)] = cls
    return cls


SystemZookeeperError = _define("SystemZookeeperError", Code.SYSTEM_ERROR)
RuntimeInconsistencyError = _define("RuntimeInconsistencyError", Code.RUNTIME_INCONSISTENCY)
DataInconsistencyError = _define("DataInconsistencyError", Code.DATA_INCONSISTENCY)
ConnectionLossError = _define("ConnectionLossError", Code.CONNECTION_LOSS)
MarshallingError = _define("MarshallingError", Code.MARSHALLING_ERROR)
UnimplementedError = _define("UnimplementedError", Code.UNIMPLEMENTED)
OperationTimeoutError = _define("OperationTimeoutError", Code.OPERATION_TIMEOUT)
BadArgumentsError = _define("BadArgumentsError", Code.BAD_ARGUMENTS)
UnknownSessionError = _define("UnknownSessionError", Code.UNKNOWN_SESSION)
NewConfigNoQuorumError = _define("NewConfigNoQuorumError", Code.NEW_CONFIG_NO_QUORUM)
ReconfigInProgressError = _define("ReconfigInProgressError", Code.RECONFIG_IN_PROGRESS)
APIError = _define("APIError", Code.API_ERROR)
NoNodeError = _define("NoNodeError", Code.NO_NODE)
NoAuthError = _define("NoAuthError", Code.NO_AUTH)
BadVersionError = _define("BadVersionError", Code.BAD_VERSION)
NoChildrenForEphemeralsError = _define("NoChildrenForEphemeralsError", Code.NO_CHILDREN_FOR_EPHEMERALS)
NodeExistsError = _define("NodeExistsError", Code.NODE_EXISTS)
NotEmptyError = _define("NotEmptyError", Code.NOT_EMPTY)
SessionExpiredError = _define("SessionExpiredError", Code.SESSION_EXPIRED)
InvalidCallbackError = _define("InvalidCallbackError", Code.INVALID_CALLBACK)
InvalidACLError = _define("InvalidACLError", Code.INVALID_ACL)
AuthFailedError = _define("AuthFailedError", Code.AUTH_FAILED)
SessionMovedError = _define("SessionMovedError", Code.SESSION_MOVED)
NotReadOnlyError = _define("NotReadOnlyError", Code.NOT_READ_ONLY)
EphemeralOnLocalSessionError = _define("EphemeralOnLocalSessionError", Code.EPHEMERAL_ON_LOCAL_SESSION)
NoWatcherError = _define("NoWatcherError", Code.NO_WATCHER)
RequestTimeoutError = _define("RequestTimeoutError", Code.REQUEST_TIMEOUT)
ReconfigDisabledError = _define("ReconfigDisabledError", Code.RECONFIG_DISABLED)
SessionClosedRequireSaslError = _define("SessionClosedRequireSaslError", Code.SESSION_CLOSED_REQUIRE_SASL)
QuotaExceededError = _define("QuotaExceededError", Code.QUOTA_EXCEEDED)
ThrottledError = _define("ThrottledError", Code.THROTTLED)


def error_for_code(code: int, path: str | None = None) -> ZooKeeperError:
    """The exception instance for a wire error code (unknown codes become a SystemZookeeperError)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return SystemZookeeperError(f"unknown error code {code}", path)
    return cls(path=path)
