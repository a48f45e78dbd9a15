"""Jute primitives and a record compiler.

A record class declares its fields with the marker types below; `record` compiles
a reader and a writer for it once, at import, as straight-line code in which runs of
fixed-size fields (int, long, boolean) become a single precompiled struct call.
That keeps the hot path (headers, Stat, getData/setData) to a handful of calls.

Wire rules: big-endian ints and longs; a boolean is one byte; a buffer or ustring is
a 4-byte length then bytes, -1 meaning null; a vector is a 4-byte count (-1 null) then items.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import (
    Annotated,
    Any,
    ClassVar,
    Protocol,
    Self,
    TypeVar,
    dataclass_transform,
    get_args,
    get_origin,
    get_type_hints,
)


class JuteError(ValueError):
    """A record could not be decoded: truncated, negative length, bad UTF-8."""


class Vector:
    """Marker for vector<T> fields; T is a primitive marker name or a record class."""

    def __init__(self, item: Any) -> None:
        self.item = item


Int = Annotated[int, "int"]
Long = Annotated[int, "long"]
Bool = Annotated[bool, "bool"]
Buffer = Annotated[bytes | None, "buffer"]
UString = Annotated[str | None, "ustring"]

_FIXED = {"int": "i", "long": "q", "bool": "?"}
_INT = struct.Struct(">i")
unpack_int = _INT.unpack_from
pack_int = _INT.pack


class JuteRecord(Protocol):
    FIELDS: ClassVar[tuple[str, ...]]

    def write(self, out: bytearray) -> None: ...

    @classmethod
    def read(cls, data: bytes | memoryview, off: int) -> tuple[Any, int]: ...


R = TypeVar("R")


class Record:
    """Base of every @record class: what `record` compiles, declared for type checkers."""

    __slots__ = ()
    FIELDS: ClassVar[tuple[str, ...]] = ()

    def write(self, out: bytearray) -> None:
        raise NotImplementedError  # replaced by @record

    @classmethod
    def read(cls, data: bytes | memoryview, off: int) -> tuple[Self, int]:
        raise NotImplementedError  # replaced by @record


def read_buffer(data: bytes | memoryview, off: int) -> tuple[bytes | None, int]:
    try:
        (n,) = unpack_int(data, off)
    except struct.error:
        raise JuteError("truncated length") from None
    off += 4
    if n < 0:
        if n != -1:
            raise JuteError(f"negative length {n}")
        return None, off
    end = off + n
    if end > len(data):
        raise JuteError("buffer runs past the end of the frame")
    return bytes(data[off:end]), end


def read_ustring(data: bytes | memoryview, off: int) -> tuple[str | None, int]:
    raw, off = read_buffer(data, off)
    if raw is None:
        return None, off
    try:
        return raw.decode("utf-8"), off
    except UnicodeDecodeError:
        raise JuteError("ustring is not valid UTF-8") from None


def write_buffer(out: bytearray, value: bytes | None) -> None:
    if value is None:
        out += b"\xff\xff\xff\xff"
    else:
        out += pack_int(len(value))
        out += value


def write_ustring(out: bytearray, value: str | None) -> None:
    write_buffer(out, None if value is None else value.encode("utf-8"))


def _read_vector(item_reader: Any) -> Any:
    def read_vector(data: bytes | memoryview, off: int) -> tuple[list[Any] | None, int]:
        try:
            (n,) = unpack_int(data, off)
        except struct.error:
            raise JuteError("truncated vector count") from None
        off += 4
        if n < 0:
            if n != -1:
                raise JuteError(f"negative vector count {n}")
            return None, off
        if n > len(data) - off:  # every item takes at least one byte
            raise JuteError(f"vector count {n} larger than the frame")
        items = []
        for _ in range(n):
            item, off = item_reader(data, off)
            items.append(item)
        return items, off

    return read_vector


def _write_vector(item_writer: Any) -> Any:
    def write_vector(out: bytearray, items: list[Any] | None) -> None:
        if items is None:
            out += b"\xff\xff\xff\xff"
            return
        out += pack_int(len(items))
        for item in items:
            item_writer(out, item)

    return write_vector


def _primitive_rw(kind: Any) -> tuple[Any, Any]:
    if kind == "buffer":
        return read_buffer, write_buffer
    if kind == "ustring":
        return read_ustring, write_ustring
    if kind in _FIXED:
        s = struct.Struct(">" + _FIXED[kind])

        def read_fixed(data: bytes | memoryview, off: int) -> tuple[Any, int]:
            try:
                return s.unpack_from(data, off)[0], off + s.size
            except struct.error:
                raise JuteError("truncated record") from None

        def write_fixed(out: bytearray, value: Any) -> None:
            out += s.pack(value)

        return read_fixed, write_fixed
    if isinstance(kind, type) and hasattr(kind, "read"):
        return kind.read, lambda out, v: v.write(out)
    raise TypeError(f"not a jute type: {kind!r}")


def _kind_of(hint: Any) -> Any:
    if get_origin(hint) is Annotated:
        return get_args(hint)[1]
    return hint  # a nested record class


@dataclass_transform()
def record(cls: type[R]) -> type[R]:
    """Make `cls` a slotted dataclass with compiled jute `read` and `write`."""
    cls = dataclasses.dataclass(slots=True)(cls)
    hints = get_type_hints(cls, include_extras=True)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    env: dict[str, Any] = {"cls": cls, "JuteError": JuteError, "struct": struct}
    read_lines = ["def read(data, off):"]
    write_lines = ["def write(self, out):"]
    i = 0
    while i < len(names):
        kind = _kind_of(hints[names[i]])
        if isinstance(kind, str) and kind in _FIXED:
            j = i
            fmt = ">"
            while (
                j < len(names)
                and isinstance(_kind_of(hints[names[j]]), str)
                and _kind_of(hints[names[j]]) in _FIXED
            ):
                fmt += _FIXED[_kind_of(hints[names[j]])]
                j += 1
            s = struct.Struct(fmt)
            env[f"s{i}"] = s
            group = names[i:j]
            targets = "".join(f"f_{n}, " for n in group)
            read_lines += [
                "    try:",
                f"        ({targets}) = s{i}.unpack_from(data, off)",
                "    except struct.error:",
                "        raise JuteError('truncated record') from None",
                f"    off += {s.size}",
            ]
            write_lines.append(f"    out += s{i}.pack({', '.join('self.' + n for n in group)})")
            i = j
            continue
        if isinstance(kind, Vector):
            item_r, item_w = _primitive_rw(kind.item)
            reader, writer = _read_vector(item_r), _write_vector(item_w)
        else:
            reader, writer = _primitive_rw(kind)
        env[f"r{i}"], env[f"w{i}"] = reader, writer
        read_lines.append(f"    f_{names[i]}, off = r{i}(data, off)")
        write_lines.append(f"    w{i}(out, self.{names[i]})")
        i += 1
    read_lines.append(f"    return cls({', '.join('f_' + n for n in names)}), off")
    if len(write_lines) == 1:
        write_lines.append("    pass")
    if len(names) == 0:
        read_lines.insert(1, "    pass")
    exec("\n".join(read_lines), env)
    exec("\n".join(write_lines), env)
    setattr(cls, "read", staticmethod(env["read"]))  # noqa: B010 - R is any class here
    setattr(cls, "write", env["write"])  # noqa: B010
    setattr(cls, "FIELDS", tuple(names))  # noqa: B010
    return cls


def encode(rec: Any) -> bytes:
    out = bytearray()
    rec.write(out)
    return bytes(out)


def decode(cls: type[R], data: bytes | memoryview, off: int = 0) -> R:
    """Decode one record of `cls` from `data` at `off` (trailing bytes are allowed, as jute allows)."""
    value, _ = cls.read(data, off)  # type: ignore[attr-defined]
    return value  # type: ignore[no-any-return]
