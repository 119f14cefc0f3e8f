"""A small Parquet writer: the inference log's files, without pyarrow in the serving process.

pyarrow cost the service about 40 MB of resident memory to write a few flat tables. This module writes
the subset of Parquet the log needs, with the standard library and numpy (and ``zstandard`` when it
compresses with zstd): flat nullable columns of doubles, 32/64-bit integers, UTC millisecond
timestamps and UTF-8 texts; one PLAIN-encoded v1 data page per column chunk; optional min/max
statistics so readers (pyarrow, DuckDB) can skip row groups. Work per row is vectorised with numpy.

Plain runtime code: it is also imported standalone, outside its package.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

KINDS = ("double", "int32", "int64", "timestamp_ms", "string")

MAGIC = b"PAR1"

# Thrift compact protocol type ids (a bool's value lives in its field header: 1 true, 2 false).
_BOOL, _I32, _I64, _BINARY, _LIST, _STRUCT = 1, 5, 6, 8, 9, 12


def _varint(value: int) -> bytes:
    """An unsigned LEB128 varint, Thrift compact's integer encoding."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _value(kind: int, value: Any) -> bytes:
    """One Thrift compact value: an int, bytes or str, an encoded struct, or a list as (element kind, items)."""
    if kind in (_I32, _I64):
        return _varint(value << 1 ^ value >> 63)  # zigzag
    if kind == _BINARY:
        raw = value.encode() if isinstance(value, str) else value
        return _varint(len(raw)) + raw
    if kind == _STRUCT:
        return value
    element, items = value
    size = bytes([len(items) << 4 | element]) if len(items) < 15 else bytes([0xF0 | element]) + _varint(len(items))
    return size + b"".join(_value(element, item) for item in items)


def _struct(*fields: tuple[int, int, Any]) -> bytes:
    """A Thrift compact struct from (field id, type, value) in increasing id order; None values are left out."""
    out = bytearray()
    last = 0
    for field_id, kind, value in fields:
        if value is None:
            continue
        header_kind = (1 if value else 2) if kind == _BOOL else kind
        delta = field_id - last
        out += bytes([delta << 4 | header_kind]) if 0 < delta <= 15 else bytes([header_kind]) + _value(_I32, field_id)
        if kind != _BOOL:
            out += _value(kind, value)
        last = field_id
    out.append(0)
    return bytes(out)


_EMPTY = _struct()
# LogicalType is a union: field 1 STRING (StringType), field 8 TIMESTAMP (TimestampType(isAdjustedToUTC, unit MILLIS)).
_STRING_TYPE = _struct((1, _STRUCT, _EMPTY))
_TIMESTAMP_MS_UTC = _struct((8, _STRUCT, _struct((1, _BOOL, True), (2, _STRUCT, _struct((1, _STRUCT, _EMPTY))))))
_TYPE_DEFINED_ORDER = _struct((1, _STRUCT, _EMPTY))  # ColumnOrder: min/max follow the logical type's order

# kind -> (physical type, converted type, logical type).
# Physical INT32=1, INT64=2, DOUBLE=5, BYTE_ARRAY=6; converted UTF8=0, TIMESTAMP_MILLIS=9.
_TYPES = {
    "double": (5, None, None),
    "int32": (1, None, None),
    "int64": (2, None, None),
    "timestamp_ms": (2, 9, _TIMESTAMP_MS_UTC),
    "string": (6, 0, _STRING_TYPE),
}
_PLAIN, _RLE, _OPTIONAL, _DATA_PAGE = 0, 3, 1, 0
_UNCOMPRESSED = 0

# A page that compression makes less than an eighth smaller is stored as it is, and its column is not
# compressed again for this many row groups (then tried again: the data may have changed). Random-looking
# doubles gain 5% from zstd at 800 MB/s: 60% of the encoding time of a log row group of 20 such features.
# Only a page of PLAIN_JUDGED_BYTES or more counts as a finding: on a few rows (a quiet log's small row
# group, encoded again at each flush) the codec's own overhead decides, not the data.
PLAIN_WORTH = 7 / 8
PLAIN_ROW_GROUPS = 16
PLAIN_JUDGED_BYTES = 4096

Bounds = tuple[bytes, bytes] | None  # (min, max) PLAIN-encoded, None where there are no non-null values


class Strings:
    """A column of UTF-8 texts as buffers: ``data`` (bytes or a uint8 numpy array) and ``offsets`` (numpy
    int64, n+1 entries, offsets[0] == 0, text i is data[offsets[i]:offsets[i+1]]), and ``valid`` (None
    when no nulls, else a numpy bool array, False = null; a null's slice is empty).

    Buffers rather than a list of str, so a column is taken, joined and encoded with numpy."""

    __slots__ = ("data", "offsets", "valid")

    def __init__(self, data: Any, offsets: Any, valid: Any = None) -> None:
        is_buffer = isinstance(data, (bytes, bytearray, memoryview))
        self.data = np.frombuffer(data, np.uint8) if is_buffer else np.asarray(data, np.uint8)
        self.offsets = np.asarray(offsets, np.int64)
        if self.offsets.ndim != 1 or not len(self.offsets) or self.offsets[0] != 0 or self.offsets[-1] > len(self.data):
            raise ValueError("offsets must start at 0 and end within data")
        lengths = np.diff(self.offsets)
        if (lengths < 0).any():
            raise ValueError("offsets must not decrease")
        if valid is not None:
            valid = np.asarray(valid, bool)
            if valid.shape != lengths.shape:
                raise ValueError(f"{len(valid)} validity flags for {len(lengths)} texts")
            if lengths[~valid].any():
                raise ValueError("a null text must be empty")
            valid = None if valid.all() else valid
        self.valid = valid

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def from_list(cls, values: list) -> Strings:
        """Texts from str items, None for null."""
        try:
            encoded = [b"" if value is None else value.encode() for value in values]
        except AttributeError:
            wrong = next(value for value in values if value is not None and not isinstance(value, str))
            raise TypeError(f"expected str or None, got {type(wrong).__name__}") from None
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
        valid = np.array([value is not None for value in values], bool) if None in values else None
        return cls(b"".join(encoded), offsets, valid)

    def take(self, indices: Any) -> Strings:
        """The texts at ``indices`` (e.g. one request id repeated over its rows), gathered without a loop."""
        indices = np.asarray(indices, np.int64)
        width = _common_length(np.diff(self.offsets))
        if width is not None:  # texts of one length (request ids, a model's name): rows of a byte matrix
            data = self.data[: len(self) * width].reshape(len(self), width)[indices].ravel() if width else b""
            return Strings(data, width * np.arange(len(indices) + 1),
                           None if self.valid is None else self.valid[indices])
        starts = self.offsets[:-1][indices]
        lengths = self.offsets[1:][indices] - starts
        offsets = np.zeros(len(indices) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        data = self.data[np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])]
        return Strings(data, offsets, None if self.valid is None else self.valid[indices])

    @staticmethod
    def concat(parts: list[Strings]) -> Strings:
        """The texts of ``parts`` one after another."""
        if not parts:
            return Strings(b"", [0])
        shifts = np.cumsum([0] + [part.offsets[-1] for part in parts[:-1]])
        offsets = np.concatenate([[0]] + [part.offsets[1:] + shift for part, shift in zip(parts, shifts)])
        data = np.concatenate([part.data[: part.offsets[-1]] for part in parts])
        if all(part.valid is None for part in parts):
            return Strings(data, offsets)
        valid = np.concatenate([np.ones(len(part), bool) if part.valid is None else part.valid for part in parts])
        return Strings(data, offsets, valid)

    def to_list(self) -> list:
        """The texts as str, None for null (for tests and debugging)."""
        raw, bounds = self.data.tobytes(), self.offsets.tolist()
        texts: list = [raw[start:end].decode() for start, end in itertools.pairwise(bounds)]
        if self.valid is not None:
            for row in np.flatnonzero(~self.valid).tolist():
                texts[row] = None
        return texts


def _common_length(lengths: np.ndarray) -> int | None:
    """The length every text has, or None (also for no texts)."""
    if not len(lengths) or (lengths != lengths[0]).any():
        return None
    return int(lengths[0])


def _plain_byte_arrays(texts: Strings, lengths: np.ndarray) -> np.ndarray:
    """The non-null texts (of ``lengths``) PLAIN-encoded, each as a 4-byte little-endian length and its
    bytes. Nulls are empty slices, so the texts' bytes are already contiguous: only the length prefixes are
    interleaved."""
    body = texts.data[: texts.offsets[-1]]
    out = np.empty(4 * len(lengths) + len(body), np.uint8)
    prefix_at = 4 * np.arange(len(lengths)) + np.concatenate(([0], np.cumsum(lengths[:-1])))
    is_prefix = np.zeros(len(out), bool)
    is_prefix[(prefix_at[:, None] + np.arange(4)).ravel()] = True
    out[is_prefix] = lengths.astype("<u4").view(np.uint8)
    out[~is_prefix] = body
    return out


def _plain_fixed_width(rows: np.ndarray) -> np.ndarray:
    """Texts of one length, as the rows of a (texts x bytes) matrix, PLAIN-encoded: each row of the output
    is the 4-byte length and the text."""
    out = np.empty((len(rows), 4 + rows.shape[1]), np.uint8)
    out[:, :4] = np.frombuffer(struct.pack("<I", rows.shape[1]), np.uint8)
    out[:, 4:] = rows
    return out.ravel()


def _fixed_width_bounds(rows: np.ndarray) -> Bounds:
    """The byte-wise smallest and largest of texts of one length (the rows of a byte matrix): the candidates
    are narrowed 8 bytes at a time by a big-endian key of those bytes. A column of one text (a model's name)
    is found by one comparison; random texts (request ids) are told apart by their first key."""
    if not len(rows):
        return None
    first = rows[0]
    if (rows == first).all():
        return first.tobytes(), first.tobytes()
    width = -(-rows.shape[1] // 8) * 8
    padded = np.zeros((len(rows), width), np.uint8)  # zero padding: the same for every text of this length
    padded[:, : rows.shape[1]] = rows
    keys = padded.view(">u8")

    def extreme(largest: bool) -> bytes:
        candidates = np.arange(len(rows))
        for j in range(keys.shape[1]):
            key = keys[candidates, j]
            candidates = candidates[key == (key.max() if largest else key.min())]
            if len(candidates) == 1:
                break
        return rows[candidates[0]].tobytes()

    return extreme(False), extreme(True)


# _PREFIX_MASKS[k] keeps the first k bytes of a big-endian 8-byte key: the bytes of a text that ends within it.
_PREFIX_MASKS = np.array([0] + [(1 << 64) - (1 << 8 * (8 - k)) for k in range(1, 9)], np.uint64)


def _text_bounds(texts: Strings) -> Bounds:
    """The byte-wise smallest and largest non-null texts, vectorised: the candidates are narrowed 8 bytes at
    a time by a big-endian key of those bytes (zeroed past a text's end, so a smaller key is a smaller
    text); texts still tied after all their bytes differ only by trailing zero bytes: the shortest is the
    smallest, the longest the largest."""
    starts, lengths = texts.offsets[:-1], np.diff(texts.offsets)
    if texts.valid is not None:
        starts, lengths = starts[texts.valid], lengths[texts.valid]
    if not len(starts):
        return None
    # Row i of windows is the 8 bytes from byte i (no copy); the padding gives the last text's start one too.
    padded = np.concatenate((texts.data[: texts.offsets[-1]], np.zeros(8, np.uint8)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, 8)

    def extreme(largest: bool) -> bytes:
        rows, depth = np.arange(len(starts)), 0
        while len(rows) > 1 and depth < lengths[rows].max():
            at = np.minimum(starts[rows] + depth, len(windows) - 1)  # a text ended before depth is masked to 0
            key = windows[at].view(">u8").ravel() & _PREFIX_MASKS[np.clip(lengths[rows] - depth, 0, 8)]
            rows = rows[key == (key.max() if largest else key.min())]
            depth += 8
        best = rows[np.argmax(lengths[rows]) if largest else np.argmin(lengths[rows])]
        return texts.data[starts[best] : starts[best] + lengths[best]].tobytes()

    return extreme(False), extreme(True)


def _check_length(values: Any, num_rows: int) -> None:
    if np.ndim(values) != 1 or len(values) != num_rows:
        raise ValueError(f"{np.shape(values)} values for {num_rows} rows")


def _doubles(values: Any, num_rows: int, bounds: bool) -> tuple[np.ndarray | None, np.ndarray, Bounds]:
    """A double column: NaN (or None in a list) is null."""
    array = np.asarray(values, np.float64)
    _check_length(array, num_rows)
    valid: np.ndarray | None = ~np.isnan(array)
    if valid.all():
        valid = None
    present = array if valid is None else array[valid]
    if not bounds or not len(present):
        return valid, present.astype("<f8", copy=False), None
    low, high = present.min(), present.max()  # the spec asks for -0.0 as a zero min and +0.0 as a zero max
    return valid, present.astype("<f8", copy=False), (struct.pack("<d", low or -0.0), struct.pack("<d", high or 0.0))


def _integers(dtype: str) -> Callable[[Any, int, bool], tuple[None, np.ndarray, Bounds]]:
    """An encoder of an integer column of ``dtype`` (no nulls); values beyond its range are refused."""
    limits = np.iinfo(dtype)

    def encode(values: Any, num_rows: int, bounds: bool) -> tuple[None, np.ndarray, Bounds]:
        array = np.asarray(values)
        _check_length(array, num_rows)
        if array.dtype.kind not in "iu":
            raise ValueError(f"expected integers, got {array.dtype}")
        low, high = int(array.min()), int(array.max())
        if low < limits.min or high > limits.max:
            raise ValueError(f"values beyond {dtype}: {low}..{high}")
        encoded = (np.asarray(low, dtype).tobytes(), np.asarray(high, dtype).tobytes()) if bounds else None
        return None, array.astype(dtype, copy=False), encoded

    return encode


def _strings(values: Any, num_rows: int, bounds: bool) -> tuple[np.ndarray | None, np.ndarray, Bounds]:
    """A text column: a Strings, or a list of str and None."""
    texts = values if isinstance(values, Strings) else Strings.from_list(list(values))
    if len(texts) != num_rows:
        raise ValueError(f"{len(texts)} values for {num_rows} rows")
    lengths = np.diff(texts.offsets) if texts.valid is None else np.diff(texts.offsets)[texts.valid]
    width = _common_length(lengths)
    if width is not None:  # texts of one length (request ids, a model's name): rows of a byte matrix
        rows = texts.data[: texts.offsets[-1]].reshape(len(lengths), width)
        return texts.valid, _plain_fixed_width(rows), _fixed_width_bounds(rows) if bounds else None
    return texts.valid, _plain_byte_arrays(texts, lengths), _text_bounds(texts) if bounds else None


_ENCODERS = {"double": _doubles, "int32": _integers("<i4"), "int64": _integers("<i8"),
             "timestamp_ms": _integers("<i8"), "string": _strings}


def _definition_levels(valid: np.ndarray | None, num_rows: int) -> bytes:
    """Definition levels (bit width 1) in the RLE/bit-packed hybrid, with their 4-byte length: one RLE run
    when all values are present (``valid`` None) or all null, else bit-packed runs of 8 levels a byte."""
    if valid is None:
        runs = _varint(num_rows << 1) + b"\x01"
    elif not valid.any():
        runs = _varint(num_rows << 1) + b"\x00"
    else:
        runs = _varint((num_rows + 7) // 8 << 1 | 1) + np.packbits(valid, bitorder="little").tobytes()
    return struct.pack("<I", len(runs)) + runs


def _codec(compression: str) -> tuple[int, Callable[[bytes], bytes]]:
    """The Parquet codec id and a compressor of one page body: ZSTD=6, GZIP=2, UNCOMPRESSED=0."""
    if compression == "zstd":
        import zstandard  # only when used: a writer without zstd never needs the package

        return 6, zstandard.ZstdCompressor(level=1).compress
    if compression == "gzip":

        def gzip(body: bytes) -> bytes:
            compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip stream, as Parquet's GZIP means
            return compressor.compress(body) + compressor.flush()

        return 2, gzip
    if compression == "none":
        return _UNCOMPRESSED, lambda body: body
    raise ValueError(f"unknown compression {compression!r}: use 'zstd', 'gzip' or 'none'")


def _schema_element(name: str, kind: str) -> bytes:
    """The SchemaElement of a nullable column of ``kind``."""
    physical, converted, logical = _TYPES[kind]
    return _struct((1, _I32, physical), (3, _I32, _OPTIONAL), (4, _BINARY, name), (6, _I32, converted),
                   (10, _STRUCT, logical))


class ParquetBuilder:
    """One Parquet file built in memory a row group at a time. getvalue() is always a complete, readable
    file of all row groups added so far; each row group is encoded and compressed once, when added.

    Each column chunk is compressed only where that pays (see PLAIN_WORTH): its codec is per chunk, as
    Parquet allows. ``uncompressed``, column name -> row groups left to store it as it is, may be shared
    by the builders of successive files, so that the finding carries over.

    Not thread-safe: one writer thread owns a builder (the zstd compressor it holds is not shareable)."""

    def __init__(self, schema: list[tuple[str, str]], statistics: tuple[str, ...] | set[str] = (),
                 compression: str = "zstd", created_by: str = "jupyter-mlship",
                 uncompressed: dict[str, int] | None = None) -> None:
        self._schema = [(name, kind) for name, kind in schema]
        self._kinds = dict(self._schema)
        names = [name for name, _ in self._schema]
        for name, kind in self._schema:
            if kind not in KINDS:
                raise ValueError(f"column {name!r}: unknown kind {kind!r}, expected one of {KINDS}")
            if names.count(name) > 1:
                raise ValueError(f"column {name!r} appears twice in the schema")
        if not self._schema:
            raise ValueError("a schema needs at least one column")
        self._statistics = frozenset(statistics)
        unknown = sorted(self._statistics - set(names))
        if unknown:
            raise ValueError(f"statistics column {unknown[0]!r} is not in the schema")
        self._codec, self._compress = _codec(compression)
        self._uncompressed = {} if uncompressed is None else uncompressed
        self._created_by = created_by
        root = _struct((4, _BINARY, "schema"), (5, _I32, len(self._schema)))
        self._schema_elements = [root] + [_schema_element(name, kind) for name, kind in self._schema]
        self._pages: list[bytes] = [MAGIC]  # the file's bytes up to its footer
        # per row group: its RowGroup struct (for the footer), its first page's index, its offset, its rows
        self._groups: list[tuple[bytes, int, int, int]] = []
        self._offset = len(MAGIC)
        self._num_rows = 0

    @property
    def num_rows(self) -> int:
        return self._num_rows

    @property
    def nbytes(self) -> int:
        """Bytes of the file before its footer: the leading magic and the encoded row groups."""
        return self._offset

    def add_row_group(self, columns: dict, num_rows: int) -> None:
        """Encode and compress one row group (all or nothing: bad input raises ValueError naming the column).
        A schema column missing from ``columns`` is written all-null."""
        if num_rows <= 0:
            raise ValueError("empty row group")
        for name in columns:
            if name not in self._kinds:
                raise ValueError(f"column {name!r} is not in the schema")
        pages: list[bytes] = []
        chunks: list[bytes] = []
        offset, uncompressed = self._offset, 0
        for name, kind in self._schema:
            if name in columns:
                try:
                    valid, values, bounds = _ENCODERS[kind](columns[name], num_rows, name in self._statistics)
                except (TypeError, ValueError, OverflowError, UnicodeError) as error:
                    raise ValueError(f"column {name!r} ({kind}): {error}") from error
            else:
                valid, values, bounds = np.zeros(num_rows, bool), np.empty(0, np.uint8), None
            body = b"".join((_definition_levels(valid, num_rows), values))
            page, codec = self._page(name, body)
            data_page = _struct((1, _I32, num_rows), (2, _I32, _PLAIN), (3, _I32, _RLE), (4, _I32, _RLE))
            page_header = _struct((1, _I32, _DATA_PAGE), (2, _I32, len(body)), (3, _I32, len(page)), (5, _STRUCT, data_page))
            statistics = None
            if name in self._statistics:
                null_count = 0 if valid is None else num_rows - int(np.count_nonzero(valid))
                low, high = bounds or (None, None)
                exact = True if bounds else None  # min/max are the values themselves, never truncated
                statistics = _struct((3, _I64, null_count), (5, _BINARY, high), (6, _BINARY, low),
                                     (7, _BOOL, exact), (8, _BOOL, exact))
            metadata = _struct((1, _I32, _TYPES[kind][0]), (2, _LIST, (_I32, [_PLAIN, _RLE])),
                               (3, _LIST, (_BINARY, [name])), (4, _I32, codec), (5, _I64, num_rows),
                               (6, _I64, len(page_header) + len(body)), (7, _I64, len(page_header) + len(page)),
                               (9, _I64, offset), (12, _STRUCT, statistics))
            chunks.append(_struct((2, _I64, offset), (3, _STRUCT, metadata)))
            pages += (page_header, page)
            offset += len(page_header) + len(page)
            uncompressed += len(page_header) + len(body)
        row_group = _struct((1, _LIST, (_STRUCT, chunks)), (2, _I64, uncompressed), (3, _I64, num_rows),
                            (5, _I64, self._offset), (6, _I64, offset - self._offset))
        self._groups.append((row_group, len(self._pages), self._offset, num_rows))
        self._pages += pages
        self._offset = offset
        self._num_rows += num_rows

    def _page(self, name: str, body: bytes) -> tuple[bytes, int]:
        """A column chunk's page and its codec: compressed, unless that does not pay for this column."""
        if self._codec == _UNCOMPRESSED:
            return body, _UNCOMPRESSED
        left = self._uncompressed.get(name, 0)
        if left:
            self._uncompressed[name] = left - 1
            return body, _UNCOMPRESSED
        page = self._compress(body)
        if len(page) > len(body) * PLAIN_WORTH:
            if len(body) >= PLAIN_JUDGED_BYTES:
                self._uncompressed[name] = PLAIN_ROW_GROUPS
            return body, _UNCOMPRESSED
        return page, self._codec

    def drop_last_row_group(self) -> None:
        """Forget the last row group added (the caller encodes its rows again, with more, as one)."""
        if not self._groups:
            raise ValueError("no row group to drop")
        _, first_page, self._offset, num_rows = self._groups.pop()
        del self._pages[first_page:]
        self._num_rows -= num_rows

    def getvalue(self) -> bytes:
        """The whole file: magic, row groups, FileMetaData (Thrift compact), its 4-byte length, magic."""
        footer = _struct((1, _I32, 1), (2, _LIST, (_STRUCT, self._schema_elements)), (3, _I64, self._num_rows),
                         (4, _LIST, (_STRUCT, [group[0] for group in self._groups])), (6, _BINARY, self._created_by),
                         (7, _LIST, (_STRUCT, [_TYPE_DEFINED_ORDER] * len(self._schema))))
        return b"".join((*self._pages, footer, struct.pack("<I", len(footer)), MAGIC))
