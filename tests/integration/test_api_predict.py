"""``POST /v1/predict`` equals the offline evaluator on the same history (DESIGN invariant 1
for the API): the same ONNX model, the same lifecycle, the forecast of the last closed
interval. Real HTTP (uvicorn on a free port, httpx); no broker needed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from streamcast.errors import SettingsError
from tests.support.api import api_in_process, api_settings, token
from tests.support.models import make_tiny_model
from training.backtest import forecast_bands
from training.data import load_table
from training.evaluate import load_session, stream_forecasts
from training.regular import regularise

HOUR = 3600
WINDOW, HORIZON, MAX_GAP = 6, 5, 2
LEVELS = (0.8, 0.95)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(
        tmp_path_factory.mktemp("predict") / "model.onnx",
        window=WINDOW,
        horizon=HORIZON,
        extras=("temp",),
        calendar=("time_of_day", "day_of_week"),
        lags=(3,),
        max_gap=MAX_GAP,
        aggregation="mean",
        levels=LEVELS,
        seed=3,
    )


def _history(key: str, seed: int) -> pd.DataFrame:
    """Several ticks per hour (aggregated by mean), a bridged 2-hour gap, a 10-hour gap that
    resets the key, and enough hours after it for forecasts again."""
    rng = np.random.default_rng(seed)
    start = 1_790_000_000 // HOUR * HOUR
    hours = [h for h in range(40) if h not in (12, 13) and not 20 <= h < 30]
    rows = []
    for h in hours:
        for minute in sorted(rng.choice(60, size=int(rng.integers(1, 4)), replace=False)):
            ts = start + h * HOUR + int(minute) * 60 + int(rng.integers(0, 60))
            rows.append((key, ts, 40 + 10 * np.sin(h / 4) + rng.normal(), 15 + rng.normal()))
    frame = pd.DataFrame(rows, columns=["key", "ts", "value", "temp"])
    frame["ts"] = pd.to_datetime(frame["ts"], unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame


def _offline(
    model: Path, frame: pd.DataFrame, path: Path
) -> dict[str, tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """The evaluator's steps (``streamcast-train evaluate``: load, regularise as
    ``training.history.prepare`` does, stream through the ONNX model, the adaptive bands
    over the history) -> each key's last forecast: ``(origin, values, lower [L, H],
    upper [L, H])``."""
    frame.to_csv(path, index=False)
    table = load_table(
        path, key_col="key", time_col="ts", value_col="value", feature_cols=("temp",)
    )
    sess, meta = load_session(model)
    series, _ = regularise(
        table, interval=meta.interval_s, max_gap=meta.gap.max_gap, min_length=meta.window + 1,
        aggregation=meta.aggregation, duplicates="error", min_support=0,
    )  # fmt: skip
    fc = stream_forecasts(sess, meta, series)
    bands = forecast_bands(series, fc, meta.calibration)
    assert bands is not None
    out = {}
    for k, name in enumerate(series.keys):
        rows = np.flatnonzero(fc.key == k)
        last = rows[np.argmax(fc.origin_ts[rows])]
        out[name] = (int(fc.origin_ts[last]), fc.forecast[last], bands[0][last], bands[1][last])
    return out


async def test_predict_equals_the_offline_evaluator(model: Path, tmp_path: Path) -> None:
    frames = {"pump-known": _history("pump-known", 1), "pump-new": _history("pump-new", 2)}
    offline = _offline(model, pd.concat(frames.values()), tmp_path / "history.csv")
    settings = api_settings(model_path=model)
    auth = {"Authorization": f"Bearer {token(scopes='predict')}"}
    async with api_in_process(settings) as api:
        for key, frame in frames.items():
            body = {
                "key": key,
                "timestamps": frame["ts"].tolist(),
                "values": frame["value"].tolist(),
                "extras": {"temp": frame["temp"].tolist()},
            }
            response = await api.client.post("/v1/predict", json=body, headers=auth)
            assert response.status_code == 200, response.text
            doc = response.json()
            origin, values, lower, upper = offline[key]
            assert doc["origin"] == pd.Timestamp(origin, unit="s", tz="UTC").strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            assert doc["horizon"] == HORIZON and len(doc["targets"]) == HORIZON
            np.testing.assert_allclose(doc["values"], values, rtol=1e-5)
            assert [i["level"] for i in doc["intervals"]] == list(LEVELS)
            for i, interval in enumerate(doc["intervals"]):
                # the key's bands adapted over the history it sent, as the service's
                np.testing.assert_allclose(interval["lower"], lower[i], rtol=1e-5)
                np.testing.assert_allclose(interval["upper"], upper[i], rtol=1e-5)
            assert doc["model"] == "tiny" and "age_s" not in doc


async def test_predict_serves_the_newest_good_artifact_of_a_models_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``STREAMCAST_MODEL_PATH`` is shared with the service, which may name a models
    directory: the API predicts with the artifact the service starts with (the newest
    that loads and passes its self-test), and says which newer one it passed over."""
    models = tmp_path / "models"
    models.mkdir()
    for version in ("20261201", "20261202"):
        make_tiny_model(
            models / f"{version}T000000Z.onnx", window=WINDOW, horizon=HORIZON,
            max_gap=MAX_GAP, levels=LEVELS, seed=3, version=version,
        )  # fmt: skip
    broken = models / "20261203T000000Z.onnx"
    broken.write_bytes((models / "20261202T000000Z.onnx").read_bytes()[:500])  # truncated
    (models / ".20261204T000000Z.onnx.tmp").write_bytes(b"still being written")
    settings = api_settings(model_path=models)
    settings.check_security()  # a directory is a valid model path
    frame = _history("pump", 4)
    body = {"key": "pump", "timestamps": frame["ts"].tolist(), "values": frame["value"].tolist()}
    auth = {"Authorization": f"Bearer {token(scopes='predict')}"}
    with caplog.at_level("ERROR", logger="streamcast.api.server"):
        async with api_in_process(settings) as api:
            response = await api.client.post("/v1/predict", json=body, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == "20261202"
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and str(broken) in refused[0], refused
    missing = api_settings(model_path=tmp_path / "nowhere")
    with pytest.raises(SettingsError, match="no such file or models directory"):
        missing.check_security()


async def test_predict_follows_new_artifacts_without_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A retrain publishes a new version into the models directory: the running API's
    next predictions use it (as the running service swaps to it), and a truncated newer
    file is refused with one line while the good one keeps serving."""
    models = tmp_path / "models"
    models.mkdir()

    def publish(version: str, *, truncate: bool = False) -> Path:
        staged = tmp_path / f"{version}.onnx"
        make_tiny_model(staged, window=WINDOW, horizon=HORIZON, max_gap=MAX_GAP,
                        levels=LEVELS, seed=int(version[-2:]), version=version)  # fmt: skip
        if truncate:
            staged.write_bytes(staged.read_bytes()[:500])
        hidden = models / f".{version}T000000Z.onnx.tmp"
        staged.replace(hidden)  # the retrain job's way: written hidden, renamed whole
        return hidden.rename(models / f"{version}T000000Z.onnx")

    publish("20261201")
    settings = api_settings(model_path=models, model_poll_s=0.05)
    frame = _history("pump", 4)
    body = {"key": "pump", "timestamps": frame["ts"].tolist(), "values": frame["value"].tolist()}
    auth = {"Authorization": f"Bearer {token(scopes='predict')}"}

    async def served(api: Any) -> tuple[str, list[float]]:
        response = await api.client.post("/v1/predict", json=body, headers=auth)
        assert response.status_code == 200, response.text
        return response.json()["model_version"], response.json()["values"]

    async def until_served(api: Any, version: str) -> list[float]:
        deadline = asyncio.get_running_loop().time() + 20
        while (got := await served(api))[0] != version:
            assert asyncio.get_running_loop().time() < deadline, f"still {got[0]}"
            await asyncio.sleep(0.05)
        return got[1]

    with caplog.at_level("INFO", logger="streamcast.api.models"):
        async with api_in_process(settings) as api:
            first = await until_served(api, "20261201")
            publish("20261202")
            second = await until_served(api, "20261202")
            assert not np.allclose(first, second), "another model's weights forecast otherwise"
            broken = publish("20261203", truncate=True)
            for _ in range(20):  # many polls: the refused file is not retried
                await asyncio.sleep(0.05)
                assert (await served(api))[0] == "20261202"
            exposition = (await api.client.get("/metrics")).text
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and str(broken) in refused[0], refused
    assert 'streamcast_api_model_swaps_total{result="swapped"} 1.0' in exposition
    assert 'streamcast_api_model_swaps_total{result="refused"} 1.0' in exposition
