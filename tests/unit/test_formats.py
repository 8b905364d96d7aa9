"""Parquet is optional (the service image has no pyarrow): the tools say so in one line
before doing any work, and CSV goes on working."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamcast.config import ClientSettings
from streamcast.errors import ConfigurationError
from streamcast.tools import formats
from streamcast.tools.history import ExportOptions, export_history
from streamcast.tools.replay import read_table


@pytest.fixture
def without_pyarrow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "parquet_available", lambda: False)


def test_pyarrow_is_found_where_it_is_installed() -> None:
    assert formats.parquet_available()  # the dev venv installs the train extra


@pytest.mark.usefixtures("without_pyarrow")
def test_replay_of_parquet_without_pyarrow_is_a_one_line_error(tmp_path: Path) -> None:
    data = tmp_path / "ticks.parquet"
    data.write_bytes(b"PAR1")
    with pytest.raises(ConfigurationError, match=r"^--data .*ticks\.parquet: Parquet needs") as e:
        read_table(data)
    assert "\n" not in str(e.value) and "streamcast[parquet]" in str(e.value)
    csv = tmp_path / "ticks.csv"
    csv.write_text("key,ts,value\na,2026-01-01T00:00:00Z,1.5\n")
    assert read_table(csv)["value"].tolist() == [1.5]


@pytest.mark.usefixtures("without_pyarrow")
async def test_history_export_to_parquet_without_pyarrow_fails_before_reading(
    tmp_path: Path,
) -> None:
    # an unreachable broker: the check must come first, without a connection
    settings = ClientSettings(bootstrap_servers="127.0.0.1:1")
    options = ExportOptions(topic="ticks", out=tmp_path / "h.pq")
    with pytest.raises(ConfigurationError, match=r"^--out .*h\.pq: Parquet needs pyarrow"):
        await export_history(settings, options)
