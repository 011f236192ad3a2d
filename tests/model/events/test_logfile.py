"""Log files with any column names and time formats; Parquet; the errors a user meets."""

from __future__ import annotations

import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model.events.interactions import DatasetError
from model.events.logfile import PARQUET_HINT, load_log, parse_columns, unix_seconds

MAPPING = {"user": "customer_id", "item": "sku", "ts": "event_time", "action": "kind"}
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc).timestamp()  # 1714564800.0

SHOP_CSV = (
    "Customer_ID,sku,event_time,kind,price\n"
    "c2,A-1,2024-05-01T12:00:00Z,view,3.5\n"
    "c1,B-2,2024-05-01 14:00:00+02:00,buy,9\n"  # 12:00 UTC
    "c2,B-2,2024-05-01T12:00:30,view,9\n"  # no zone: UTC
    "c1,A-1,1714564860,,3.5\n"  # unix seconds in the same column
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_parse_columns() -> None:
    assert parse_columns("user=customer_id,item=sku,ts=event_time") == {
        "user": "customer_id",
        "item": "sku",
        "ts": "event_time",
    }
    assert parse_columns(" user = a , action=k ,") == {"user": "a", "action": "k"}
    for spec, message in [
        ("user", "not ROLE=COLUMN"),
        ("user=", "not ROLE=COLUMN"),
        ("customer=c", "unknown role 'customer'"),
        ("user=a,user=b", "user is given twice"),
        ("", "empty"),
    ]:
        with pytest.raises(DatasetError, match=message):
            parse_columns(spec)


def test_csv_with_a_column_mapping_and_mixed_time_formats(tmp_path: Path) -> None:
    data = load_log(_write(tmp_path / "shop.csv", SHOP_CSV), columns=MAPPING)
    assert data.users == ("c1", "c2")
    assert data.vocab.items == ("A-1", "B-2") and data.vocab.actions == ("buy", "view")
    assert data.ts.tolist() == [T0, T0 + 60, T0, T0 + 30]  # per user, in time order
    assert [data.vocab.actions[a - 1] if a else None for a in data.actions] == [
        "buy",
        None,
        "view",
        "view",
    ]


def test_mapped_names_match_case_insensitively_and_defaults_fill_the_rest(
    tmp_path: Path,
) -> None:
    text = "USER_ID,SKU,When\nu,a,2024-05-01\nu,b,2024-05-02\n"
    data = load_log(_write(tmp_path / "x.csv", text), columns={"item": "sku", "ts": "WHEN"})
    assert data.ts.tolist() == [T0 - 12 * 3600, T0 + 12 * 3600]  # dates: midnight UTC


def test_missing_mapped_column_names_the_file_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "shop.csv", SHOP_CSV)
    with pytest.raises(DatasetError) as exc:
        load_log(path, columns={**MAPPING, "item": "product"})
    message = str(exc.value)
    assert str(path) in message and "'product'" in message and "item=product" in message
    assert "customer_id" in message  # the columns that are there


def test_unparsable_time_names_file_column_row_and_value(tmp_path: Path) -> None:
    path = _write(tmp_path / "shop.csv", SHOP_CSV.replace("1714564860", "next tuesday"))
    with pytest.raises(DatasetError) as exc:
        load_log(path, columns=MAPPING)
    message = str(exc.value)
    assert message.startswith(str(path))
    assert "column 'event_time', data row 4: cannot read 'next tuesday' as a time" in message


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_time(tmp_path: Path, value: str) -> None:
    path = _write(tmp_path / "log.csv", f"user,item,ts\nu,a,1\nu,b,{value}\n")
    with pytest.raises(DatasetError, match="column 'ts', data row 2: .* not a finite time"):
        load_log(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty file \\(no header"), ("user,item,ts\n", "empty file \\(a header, no events")],
)
def test_empty_files(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path / "empty.csv", text)
    with pytest.raises(DatasetError, match=f"{path}: {message}"):
        load_log(path)


def test_empty_id_names_its_row(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.csv", "user,item,ts\nu,a,1\n,b,2\n")
    with pytest.raises(DatasetError, match="column 'user', data row 2: empty id"):
        load_log(path)


def test_unix_seconds_of_every_form() -> None:
    moment = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    values: list[object] = [
        T0,
        int(T0),
        str(T0),
        "2024-05-01T12:00:00Z",
        "2024-05-01T14:00:00+02:00",
        "2024-05-01T12:00:00",
        moment,
        moment.replace(tzinfo=None),
        moment.astimezone(timezone(timedelta(hours=-5))),
        date(2024, 5, 1),
    ]
    got = unix_seconds(values, Path("f.csv"), "ts").tolist()
    assert got == [T0] * 9 + [T0 - 12 * 3600]
    with pytest.raises(DatasetError, match="data row 2: cannot read None"):
        unix_seconds([T0, None], Path("f.csv"), "ts")


def test_parquet_with_typed_columns_and_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "shop.parquet"
    times = [datetime(2024, 5, 1, 12, 0, s, tzinfo=timezone.utc) for s in (0, 30, 10)]
    table = pa.table(
        {
            "customer_id": pa.array([7, 7, 8], pa.int64()),
            "sku": ["A-1", "B-2", "A-1"],
            "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(table, path)
    data = load_log(path, columns={"user": "customer_id", "item": "sku", "ts": "event_time"})
    assert data.users == ("7", "8") and data.ts.tolist() == [T0, T0 + 30, T0 + 10]
    pq.write_table(table.slice(0, 0), path)  # the schema, no rows
    with pytest.raises(DatasetError, match="empty file"):
        load_log(path, columns={"user": "customer_id", "item": "sku", "ts": "event_time"})
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        load_log(path)


def test_parquet_without_the_extra_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user": ["u"], "item": ["a"], "ts": [1.0]}), path)
    # As in an environment without pyarrow: `import pyarrow.parquet` raises ImportError.
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DatasetError) as exc:
        load_log(path)
    assert str(exc.value) == f"{path}: {PARQUET_HINT}"
    assert "pip install 'solar[parquet]'" in PARQUET_HINT
