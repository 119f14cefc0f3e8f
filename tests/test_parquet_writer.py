"""The service's own Parquet writer (app/parquet_writer.py): its files read back exactly with pyarrow and DuckDB."""

from __future__ import annotations

import datetime as dt
import io
import math
import time

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jupyter_mlship.runtime import runtime_module

parquet_writer = runtime_module("parquet_writer")
ParquetBuilder, Strings = parquet_writer.ParquetBuilder, parquet_writer.Strings
PLAIN_ROW_GROUPS = parquet_writer.PLAIN_ROW_GROUPS

SCHEMA = [("request_id", "string"), ("instance", "int32"), ("ts", "timestamp_ms"), ("latency_ms", "double"),
          ("seq", "int64"), ("note", "string"), ("missing", "double"), ("missing_text", "string")]
STATISTICS = ("request_id", "ts", "latency_ms", "note", "missing", "missing_text")
ARROW_TYPES = {"request_id": pa.string(), "instance": pa.int32(), "ts": pa.timestamp("ms", tz="UTC"),
               "latency_ms": pa.float64(), "seq": pa.int64(), "note": pa.string(), "missing": pa.float64(),
               "missing_text": pa.string()}
T0 = 1_700_000_000_000  # ms since the epoch: 2023-11-14T22:13:20Z


def utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)


def row_group(start: int, n: int) -> tuple[dict, dict]:
    """Columns of rows start..start+n (one missing: written all-null), and the values expected back."""
    rows = np.arange(start, start + n)
    latency = rows * 0.25
    latency[rows % 3 == 0] = np.nan
    notes = [None if row % 4 == 1 else ("" if row % 4 == 2 else f"ñote-{row}-日本") for row in rows.tolist()]
    request_ids = Strings.from_list([f"req-{row // 5:04d}" for row in range(start - start % 5, start + n, 5)])
    columns = {
        "request_id": request_ids.take((rows - (start - start % 5)) // 5),
        "instance": (rows % 5).astype(np.int32),
        "ts": T0 + rows * 1000,
        "latency_ms": latency,
        "seq": rows.astype(np.int64) * 10**12,
        "note": notes if start % 2 else Strings.from_list(notes),
    }
    expected = {
        "request_id": [f"req-{row // 5:04d}" for row in rows.tolist()],
        "instance": (rows % 5).tolist(),
        "ts": [utc(T0 + row * 1000) for row in rows.tolist()],
        "latency_ms": [None if row % 3 == 0 else row * 0.25 for row in rows.tolist()],
        "seq": [row * 10**12 for row in rows.tolist()],
        "note": notes,
        "missing": [None] * n,
        "missing_text": [None] * n,
    }
    return columns, expected


def built(sizes: list[int], **options) -> tuple[ParquetBuilder, dict]:
    builder = ParquetBuilder(SCHEMA, statistics=STATISTICS, **options)
    expected: dict = {name: [] for name, _ in SCHEMA}
    start = 0
    for n in sizes:
        columns, values = row_group(start, n)
        builder.add_row_group(columns, n)
        for name in expected:
            expected[name] += values[name]
        start += n
    return builder, expected


def test_every_kind_reads_back_after_each_row_group():
    builder = ParquetBuilder(SCHEMA, statistics=STATISTICS)
    empty = pq.read_table(io.BytesIO(builder.getvalue()))
    assert empty.num_rows == 0 and empty.schema == pa.schema(ARROW_TYPES.items())

    expected: dict = {name: [] for name, _ in SCHEMA}
    start = 0
    # bit-packed levels of partial and whole bytes; a run header of more than one byte
    for groups, n in enumerate((1, 7, 8, 9, 130, 3), 1):
        columns, values = row_group(start, n)
        builder.add_row_group(columns, n)
        for name in expected:
            expected[name] += values[name]
        start += n

        data = builder.getvalue()
        assert data[:4] == data[-4:] == b"PAR1"
        footer_length = int.from_bytes(data[-8:-4], "little")
        assert builder.nbytes == len(data) - footer_length - 8
        assert builder.num_rows == start
        table = pq.read_table(io.BytesIO(data))
        assert table.schema == pa.schema(ARROW_TYPES.items())
        assert table.to_pydict() == expected
        assert pq.ParquetFile(io.BytesIO(data)).metadata.num_row_groups == groups
    metadata = pq.ParquetFile(io.BytesIO(builder.getvalue())).metadata
    assert metadata.num_row_groups == 6 and metadata.num_rows == start
    assert metadata.created_by == "jupyter-mlship"
    assert [metadata.row_group(i).num_rows for i in range(6)] == [1, 7, 8, 9, 130, 3]


def test_many_row_groups_and_columns():
    """Over 15 row groups and columns: Thrift's long list headers."""
    schema = [(f"c{i}", "int64") for i in range(20)]
    builder = ParquetBuilder(schema, statistics={"c0"}, compression="none")
    for group in range(17):
        builder.add_row_group({name: np.arange(3) + group * 3 + i for i, (name, _) in enumerate(schema)}, 3)
    table = pq.read_table(io.BytesIO(builder.getvalue()))
    assert table.column_names == [name for name, _ in schema]
    assert table.column("c5").to_pylist() == list(range(5, 5 + 51))
    assert pq.ParquetFile(io.BytesIO(builder.getvalue())).metadata.num_row_groups == 17


def test_the_last_row_group_can_be_dropped_and_its_rows_encoded_again_with_more():
    """The inference log re-encodes a small last row group with the next flush's rows, as one."""
    builder, expected = built([7, 5])
    size = builder.nbytes
    columns, _ = row_group(7, 5)
    builder.drop_last_row_group()
    assert builder.num_rows == 7 and builder.nbytes < size
    merged, values = row_group(7, 9)
    builder.add_row_group(merged, 9)
    metadata = pq.ParquetFile(io.BytesIO(builder.getvalue())).metadata
    assert (metadata.num_row_groups, metadata.num_rows) == (2, 16)
    table = pq.read_table(io.BytesIO(builder.getvalue()))
    assert table.column("request_id").to_pylist() == expected["request_id"][:7] + values["request_id"]
    builder.drop_last_row_group()
    builder.drop_last_row_group()
    with pytest.raises(ValueError, match="no row group to drop"):
        builder.drop_last_row_group()


def test_missing_integer_and_timestamp_columns_are_null():
    builder = ParquetBuilder([("n", "int32"), ("ts", "timestamp_ms"), ("seq", "int64"), ("x", "double")],
                             statistics={"ts"})
    builder.add_row_group({"x": np.array([1.0, 2.0, 3.0])}, 3)
    builder.add_row_group({"ts": np.array([T0]), "x": np.array([np.nan])}, 1)
    data = builder.getvalue()
    assert pq.read_table(io.BytesIO(data)).to_pydict() == {
        "n": [None] * 4, "ts": [None] * 3 + [utc(T0)], "seq": [None] * 4, "x": [1.0, 2.0, 3.0, None]}
    metadata = pq.ParquetFile(io.BytesIO(data)).metadata
    first, second = metadata.row_group(0).column(1).statistics, metadata.row_group(1).column(1).statistics
    assert not first.has_min_max and first.null_count == 3
    assert (second.min, second.max, second.null_count) == (utc(T0), utc(T0), 0)


def test_duckdb_reads_the_same_file_and_statistics_are_right(tmp_path):
    builder, expected = built([40, 25, 35])
    path = tmp_path / "log.parquet"
    path.write_bytes(builder.getvalue())

    con = duckdb.connect()
    names = ", ".join(name for name, _ in SCHEMA if name != "ts")
    rows = con.execute(f"SELECT epoch_ms(ts), {names} FROM read_parquet(?)", [str(path)]).fetchall()
    assert [row[0] for row in rows] == [int(value.timestamp() * 1000) for value in expected["ts"]]
    for position, name in enumerate(name for name, _ in SCHEMA if name != "ts"):
        assert [row[position + 1] for row in rows] == expected[name], name
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))",
                             [str(path)]).fetchall())
    assert types == {"request_id": "VARCHAR", "instance": "INTEGER", "ts": "TIMESTAMP WITH TIME ZONE",
                     "latency_ms": "DOUBLE", "seq": "BIGINT", "note": "VARCHAR", "missing": "DOUBLE",
                     "missing_text": "VARCHAR"}
    count = con.execute("SELECT count(*) FROM read_parquet(?) WHERE ts BETWEEN TIMESTAMPTZ '2023-11-14 22:13:30+00' "
                        "AND TIMESTAMPTZ '2023-11-14 22:14:19+00'", [str(path)]).fetchone()[0]
    assert count == 50  # rows 10..59
    assert con.execute("SELECT count(*) FROM read_parquet(?) WHERE note IS NULL", [str(path)]).fetchone()[0] == 25

    metadata = pq.ParquetFile(path).metadata
    bounds = [(0, 40), (40, 65), (65, 100)]
    for group, (start, stop) in enumerate(bounds):
        chunk = {metadata.row_group(group).column(j).path_in_schema: metadata.row_group(group).column(j)
                 for j in range(len(SCHEMA))}
        for name in ("instance", "seq"):
            assert chunk[name].statistics is None, name
        stats = {name: chunk[name].statistics for name in STATISTICS}
        assert (stats["ts"].min, stats["ts"].max) == (utc(T0 + start * 1000), utc(T0 + (stop - 1) * 1000))
        assert stats["ts"].null_count == 0
        present = [value for value in expected["latency_ms"][start:stop] if value is not None]
        assert (stats["latency_ms"].min, stats["latency_ms"].max) == (min(present), max(present))
        assert stats["latency_ms"].null_count == len(expected["latency_ms"][start:stop]) - len(present)
        notes = [note for note in expected["note"][start:stop] if note is not None]
        assert (stats["note"].min, stats["note"].max) == (min(notes, key=str.encode), max(notes, key=str.encode))
        assert stats["note"].min == ""
        assert stats["note"].null_count == stop - start - len(notes)
        assert stats["request_id"].min == expected["request_id"][start]
        assert stats["request_id"].max == expected["request_id"][stop - 1]
        for name in ("missing", "missing_text"):
            assert not stats[name].has_min_max and stats[name].null_count == stop - start

    duck_stats = con.execute("SELECT row_group_id, stats_min_value, stats_max_value FROM parquet_metadata(?) "
                             "WHERE path_in_schema = 'request_id' ORDER BY row_group_id", [str(path)]).fetchall()
    assert duck_stats == [(0, "req-0000", "req-0007"), (1, "req-0008", "req-0012"), (2, "req-0013", "req-0019")]


@pytest.mark.parametrize("compression, codec", [("zstd", "ZSTD"), ("gzip", "GZIP"), ("none", "UNCOMPRESSED")])
def test_compressions_read_back(compression, codec, tmp_path):
    builder, expected = built([50, 60], compression=compression)
    data = builder.getvalue()
    assert pq.read_table(io.BytesIO(data)).to_pydict() == expected
    assert pq.ParquetFile(io.BytesIO(data)).metadata.row_group(1).column(3).compression == codec
    (tmp_path / "x.parquet").write_bytes(data)
    result = duckdb.connect().execute("SELECT sum(seq) FROM read_parquet(?)", [str(tmp_path / "x.parquet")])
    assert result.fetchone()[0] == sum(expected["seq"])


def test_zstd_is_much_smaller_on_repetitive_data():
    n = 20_000
    columns = {"text": Strings.from_list(["the same model version"]).take(np.zeros(n, np.int64)),
               "value": np.tile([1.0, 2.0, 3.0], n // 3 + 1)[:n], "ts": np.full(n, T0)}
    schema = [("text", "string"), ("value", "double"), ("ts", "timestamp_ms")]
    sizes = {}
    for compression in ("zstd", "gzip", "none"):
        builder = ParquetBuilder(schema, compression=compression)
        builder.add_row_group(columns, n)
        sizes[compression] = len(builder.getvalue())
        table = pq.read_table(io.BytesIO(builder.getvalue()))
        assert table.column("text").to_pylist() == ["the same model version"] * n
    assert sizes["zstd"] * 20 < sizes["none"]
    assert sizes["gzip"] * 10 < sizes["none"]


def test_strings_round_trips():
    values = ["", "a", None, "héllo wörld", "", "日本語テキスト", None, "emoji 🎉", "x" * 300]
    texts = Strings.from_list(values)
    assert len(texts) == len(values) and texts.to_list() == values
    assert texts.offsets.dtype == np.int64 and texts.offsets[0] == 0
    assert texts.valid.tolist() == [v is not None for v in values]
    assert Strings.from_list(["a", ""]).valid is None

    indices = np.array([8, 0, 2, 5, 5, 3, 6, 1])
    assert texts.take(indices).to_list() == [values[i] for i in indices]
    assert texts.take(np.zeros(4, np.int64)).to_list() == [""] * 4
    assert texts.take(np.array([], np.int64)).to_list() == []
    assert Strings.from_list(["only"]).take(np.zeros(3, np.int64)).valid is None

    empty = Strings.from_list([])
    assert len(empty) == 0 and empty.to_list() == []
    plain = Strings.from_list(["p", "q"])
    assert Strings.concat([texts, empty, plain, texts.take(indices)]).to_list() == (
        values + ["p", "q"] + [values[i] for i in indices])
    assert Strings.concat([plain, plain]).valid is None and Strings.concat([plain, plain]).to_list() == ["p", "q"] * 2
    assert Strings.concat([]).to_list() == [] and len(Strings.concat([empty])) == 0

    raw = "añb".encode()
    from_buffers = Strings(raw, np.array([0, 1, 3, 3, 4]), np.array([True, True, False, True]))
    assert from_buffers.to_list() == ["a", "ñ", None, "b"]
    assert Strings(np.frombuffer(raw, np.uint8), [0, 4]).to_list() == ["añb"]
    with pytest.raises(ValueError, match="null text must be empty"):
        Strings(raw, [0, 1, 4], [True, False])
    with pytest.raises(ValueError, match="offsets"):
        Strings(raw, [0, 3, 2])
    with pytest.raises(TypeError, match="int"):
        Strings.from_list(["a", 3])


def test_string_statistics_match_python_order():
    """min/max over texts sharing long prefixes, differing by trailing NUL bytes, empty and non-ASCII."""
    builder = ParquetBuilder([("s", "string")], statistics={"s"}, compression="none")
    builder.add_row_group({"s": ["a\x00", "a", "a\x00\x00", "b\x00", "b", "", "ab"][1:] + ["a\x00"]}, 7)
    stats = pq.ParquetFile(io.BytesIO(builder.getvalue())).metadata.row_group(0).column(0).statistics
    assert (stats.min, stats.max) == ("", "b\x00")
    builder = ParquetBuilder([("s", "string")], statistics={"s"}, compression="none")
    builder.add_row_group({"s": ["a\x00", "a", "a\x00\x00", "b", "b\x00"]}, 5)
    stats = pq.ParquetFile(io.BytesIO(builder.getvalue())).metadata.row_group(0).column(0).statistics
    assert (stats.min, stats.max) == ("a", "b\x00")

    rng = np.random.default_rng(7)
    alphabet = ["", "a", "b", "\x00", "é", "zz", "prefix-" * 3]
    for trial in range(30):
        n = int(rng.integers(1, 60))
        values = ["".join(rng.choice(alphabet, int(rng.integers(0, 6)))) for _ in range(n)]
        values = [None if rng.random() < 0.2 else value for value in values]
        _assert_text_statistics(values)


def _assert_text_statistics(values: list) -> bytes:
    """One text column written with statistics: its min/max are Python's byte order over the present
    texts (none without any) and its null count is right. The file, for more checks."""
    builder = ParquetBuilder([("s", "string")], statistics={"s"}, compression="none")
    builder.add_row_group({"s": Strings.from_list(values)}, len(values))
    data = builder.getvalue()
    stats = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0).column(0).statistics
    present = [value.encode() for value in values if value is not None]
    if present:
        assert (stats.min.encode(), stats.max.encode()) == (min(present), max(present)), values
    else:
        assert not stats.has_min_max
    assert stats.null_count == values.count(None)
    return data


def test_double_statistics_sign_zero_and_skip_nan():
    """Parquet's rule for zeros: a zero min is written as -0.0 and a zero max as +0.0."""
    builder = ParquetBuilder([("x", "double")], statistics={"x"})
    builder.add_row_group({"x": np.array([0.0, 2.5, np.nan])}, 3)
    builder.add_row_group({"x": np.array([-0.0, -4.0, np.inf])}, 3)
    builder.add_row_group({"x": np.array([np.nan, -1.0, -0.0])}, 3)
    metadata = pq.ParquetFile(io.BytesIO(builder.getvalue())).metadata
    stats = [metadata.row_group(i).column(0).statistics for i in range(3)]
    assert [(s.min, s.max, s.null_count) for s in stats] == [(0.0, 2.5, 1), (-4.0, np.inf, 0), (-1.0, 0.0, 1)]
    assert math.copysign(1, stats[0].min) == -1 and math.copysign(1, stats[2].max) == 1


def test_large_file_reads_back_exactly(capsys):
    n, width = 50_000, 25
    rng = np.random.default_rng(0)
    doubles = {f"f{i}": rng.normal(size=n) for i in range(width)}
    doubles["f3"][rng.random(n) < 0.1] = np.nan
    texts = [f"request-{i:08x}-{'é' * (i % 7)}" for i in range(n)]
    texts[::97] = [None] * len(texts[::97])
    schema = [(name, "double") for name in doubles] + [("text", "string")]

    started = time.perf_counter()
    builder = ParquetBuilder(schema, statistics=("f0", "text"))
    builder.add_row_group({**doubles, "text": Strings.from_list(texts)}, n)
    data = builder.getvalue()
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nencoded {n} rows x {width} doubles + a string column (zstd): {elapsed * 1000:.1f} ms, {len(data)} bytes")

    table = pq.read_table(io.BytesIO(data))
    for name, values in doubles.items():
        column = table.column(name)
        assert column.null_count == int(np.isnan(values).sum())
        np.testing.assert_array_equal(column.to_numpy(), values)
    assert table.column("text").to_pylist() == texts


@pytest.mark.parametrize("columns, num_rows, message", [
    ({"nope": np.zeros(2)}, 2, "'nope'"),
    ({"latency_ms": np.zeros(3)}, 2, "'latency_ms'"),
    ({"latency_ms": np.zeros((2, 2))}, 2, "'latency_ms'"),
    ({"latency_ms": ["a", "b"]}, 2, "'latency_ms'"),
    ({"instance": np.array([1.5, 2.0])}, 2, "'instance'"),
    ({"instance": np.array([1, 2**31])}, 2, "'instance'"),
    ({"seq": np.array([1, 2], np.uint64) * 2**63}, 2, "'seq'"),
    ({"ts": np.array(["2024-01-01", "2024-01-02"], "datetime64[ms]")}, 2, "'ts'"),
    ({"note": ["a", 3]}, 2, "'note'"),
    ({"note": Strings.from_list(["a"])}, 2, "'note'"),
    ({"note": ["\ud800", "a"]}, 2, "'note'"),
    ({}, 0, "empty row group"),
])
def test_bad_input_raises_naming_the_column(columns, num_rows, message):
    builder, expected = built([5])
    before = builder.getvalue()
    with pytest.raises(ValueError, match=message):
        builder.add_row_group(columns, num_rows)
    assert builder.getvalue() == before and builder.num_rows == 5
    assert pq.read_table(io.BytesIO(before)).to_pydict() == expected


def test_bad_schema_raises():
    with pytest.raises(ValueError, match="'x'"):
        ParquetBuilder([("x", "float")])
    with pytest.raises(ValueError, match="'y'"):
        ParquetBuilder([("x", "double")], statistics={"y"})
    with pytest.raises(ValueError, match="'x'"):
        ParquetBuilder([("x", "double"), ("x", "int32")])
    with pytest.raises(ValueError, match="compression"):
        ParquetBuilder([("x", "double")], compression="snappy")


def test_texts_of_one_length_take_and_encode_as_rows_of_a_byte_matrix():
    """Request ids and a model's name share one length: take and PLAIN encoding have a path of their own
    for that (nulls between equal texts, empty texts and nulls alike), and it gives the same texts."""
    ids = Strings.from_list(["abcd", "efgh", "ijkl"])
    assert ids.take([2, 0, 0, 1]).to_list() == ["ijkl", "abcd", "abcd", "efgh"]
    assert Strings.from_list(["", None, ""]).take([2, 1, 0, 1]).to_list() == ["", None, "", None]
    assert Strings.from_list(["ab", "abc"]).take([1, 0]).to_list() == ["abc", "ab"]  # the general path
    columns = {"request_id": ids.take(np.array([0, 1, 1, 2])), "note": ["xy", None, "zw", "ñ"],
               "missing_text": ["", None, "", None]}
    builder = ParquetBuilder(SCHEMA, statistics=STATISTICS)
    builder.add_row_group(columns, 4)
    table = pq.read_table(io.BytesIO(builder.getvalue()))
    assert table.column("request_id").to_pylist() == ["abcd", "efgh", "efgh", "ijkl"]
    assert table.column("note").to_pylist() == ["xy", None, "zw", "ñ"]  # "ñ" is two bytes: one length
    assert table.column("missing_text").to_pylist() == ["", None, "", None]


def test_statistics_of_texts_of_one_length_match_python_order():
    """Texts of one length (request ids, a model's name) have min/max of their own: one text repeated,
    texts sharing prefixes past the first 8-byte key, lengths that are not a multiple of 8, nulls."""
    rng = np.random.default_rng(3)
    for width in (0, 1, 5, 8, 9, 17, 32):
        for trial in range(12):
            n = int(rng.integers(1, 80))
            alphabet = ["a", "b"] if trial % 3 else ["a"]  # some columns hold one text only
            shared = "".join(rng.choice(["x", "y"], width // 2))  # a common prefix in some trials
            values = []
            for _ in range(n):
                tail = "".join(rng.choice(alphabet, width - len(shared) if trial % 2 else width))
                values.append(shared + tail if trial % 2 else tail)
            values = [None if rng.random() < 0.15 else value for value in values]
            data = _assert_text_statistics(values)
            assert pq.read_table(io.BytesIO(data)).column("s").to_pylist() == values


def test_a_column_compression_does_not_pay_for_is_stored_as_it_is_and_tried_again_later(tmp_path):
    """zstd makes random-looking doubles 5% smaller at 800 MB/s: such a column chunk is stored uncompressed
    (its codec is per chunk), while a repetitive column in the same row group stays compressed; the
    finding carries over to the next file's builder, and the column is tried again PLAIN_ROW_GROUPS later."""
    rng = np.random.default_rng(7)
    n = 5000
    schema = [("noise", "double"), ("small_ints", "double")]

    def columns(noise):
        return {"noise": noise, "small_ints": np.floor(rng.random(n) * 8)}

    def codecs(data: bytes) -> list[dict[str, str]]:
        meta = pq.ParquetFile(io.BytesIO(data)).metadata
        return [{meta.row_group(g).column(c).path_in_schema: meta.row_group(g).column(c).compression
                 for c in range(meta.num_columns)} for g in range(meta.num_row_groups)]

    remembered: dict[str, int] = {}
    first = ParquetBuilder(schema, uncompressed=remembered)
    written = [columns(rng.normal(size=n)) for _ in range(2)]
    for group in written:
        first.add_row_group(group, n)
    data = first.getvalue()
    assert codecs(data) == [{"noise": "UNCOMPRESSED", "small_ints": "ZSTD"}] * 2
    table = pq.read_table(io.BytesIO(data))
    assert table.column("noise").to_pylist() == [x for g in written for x in g["noise"].tolist()]
    (tmp_path / "mixed.parquet").write_bytes(data)
    total = duckdb.connect().execute("SELECT sum(noise), sum(small_ints) FROM read_parquet(?)",
                                     [str(tmp_path / "mixed.parquet")]).fetchone()
    assert total == pytest.approx((sum(g["noise"].sum() for g in written), sum(g["small_ints"].sum() for g in written)))
    assert remembered == {"noise": PLAIN_ROW_GROUPS - 1}

    second = ParquetBuilder(schema, uncompressed=remembered)  # the next file: not tried again at once
    repetitive = np.tile([0.5, 1.5], n // 2)  # compressible now, but only seen once the pause is over
    for _ in range(PLAIN_ROW_GROUPS):
        second.add_row_group(columns(repetitive), n)
    found = codecs(second.getvalue())
    assert [g["noise"] for g in found] == ["UNCOMPRESSED"] * (PLAIN_ROW_GROUPS - 1) + ["ZSTD"]
    assert pq.read_table(io.BytesIO(second.getvalue())).column("noise").to_pylist()[-n:] == repetitive.tolist()


def test_a_few_rows_that_do_not_pay_for_compression_are_no_finding_about_the_column():
    """A quiet log's small row group is encoded again at every flush: on a few rows zstd's own overhead
    makes compression not pay, and that must not keep the column uncompressed once its rows add up."""
    remembered: dict[str, int] = {}
    builder = ParquetBuilder([("ts", "timestamp_ms")], uncompressed=remembered)
    builder.add_row_group({"ts": np.full(3, T0)}, 3)
    meta = pq.ParquetFile(io.BytesIO(builder.getvalue())).metadata
    assert meta.row_group(0).column(0).compression == "UNCOMPRESSED" and remembered == {}
    builder.drop_last_row_group()
    builder.add_row_group({"ts": np.full(5000, T0)}, 5000)
    meta = pq.ParquetFile(io.BytesIO(builder.getvalue())).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert pq.read_table(io.BytesIO(builder.getvalue())).num_rows == 5000
