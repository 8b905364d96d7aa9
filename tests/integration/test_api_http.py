"""The API over real HTTP (uvicorn on a free port, httpx), no broker: bearer JWTs (HS256,
RS256 from a PEM file, ES256 from a JWKS file), scopes, per-client rate limits, request
bounds and errors that name the field and the reason, CORS off by default."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from streamcast.config import ApiSettings, load_settings, unknown_variables
from streamcast.core.forecast_rows import encode_forecast_rows
from streamcast.core.records import ForecastBatch, encode_forecasts
from streamcast.core.schemas import FORECAST_ROW_HEADERS
from streamcast.errors import SettingsError
from tests.support.api import AUDIENCE, ListFollower, api_in_process, api_settings, token
from tests.support.models import make_tiny_model

WINDOW = 4


def _bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def test_tokens_are_checked_and_scopes_enforced() -> None:
    async with api_in_process(api_settings()) as api:
        get = api.client.get
        missing = await get("/v1/forecasts/pump-1")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith('Bearer realm="streamcast"')
        assert missing.json()["error"] == "invalid_request"
        cases = {
            "expired": token(expires_in_s=-120),
            "another audience": token(audience="someone-else"),
            "another issuer": token(issuer="https://evil.test"),
            "signature is invalid": token(key="another-secret-of-at-least-32-chars!!"),
            "invalid": "not.a.jwt",
        }
        for says, bad in cases.items():
            response = await get("/v1/forecasts/pump-1", headers=_bearer(bad))
            assert response.status_code == 401, (says, response.text)
            assert says in response.json()["detail"], response.text
            assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert (
            await get("/v1/forecasts/x", headers={"Authorization": "Basic eDp5"})
        ).status_code == 401
        no_exp = jwt.encode(
            {"aud": AUDIENCE, "iss": "https://issuer.test", "scope": "forecasts:read"},
            "test-secret-of-at-least-32-characters!",
        )
        response = await get("/v1/forecasts/x", headers=_bearer(no_exp))
        assert response.status_code == 401 and "exp" in response.json()["detail"]
        # a valid token without the scope: 403, and which scope is missing
        predict_only = _bearer(token(scopes="predict"))
        response = await get("/v1/forecasts/pump-1", headers=predict_only)
        assert response.status_code == 403
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
        assert "forecasts:read" in response.json()["detail"]
        response = await api.client.post(
            "/v1/predict", json={}, headers=_bearer(token(scopes="forecasts:read"))
        )
        assert response.status_code == 403
        # the right token passes: an unknown key is a clear 404
        response = await get("/v1/forecasts/pump-1", headers=_bearer(token()))
        assert response.status_code == 404 and response.json()["error"] == "not_found"
        assert "pump-1" in response.json()["detail"]
        # probes, metrics, the page and the docs need no token
        for path in ("/healthz", "/readyz", "/metrics", "/", "/docs", "/openapi.json"):
            assert (await get(path)).status_code == 200, path
        schema = (await get("/openapi.json")).json()
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert schema["paths"]["/v1/predict"]["post"]["security"] == [{"bearer": []}]
        assert "security" not in schema["paths"]["/healthz"]["get"]


def _rsa_pem(tmp_path: Path) -> tuple[rsa.RSAPrivateKey, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "public.pem"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, path


async def test_rs256_from_a_pem_file_refuses_other_algorithms(tmp_path: Path) -> None:
    key, pem = _rsa_pem(tmp_path)
    settings = api_settings(api_jwt_secret=None, api_jwt_public_key_file=pem)
    async with api_in_process(settings) as api:
        good = await api.client.get(
            "/v1/forecasts/a", headers=_bearer(token(key, algorithm="RS256"))
        )
        assert good.status_code == 404
        # the classic confusion: an HS256 token "signed" with the public key's text
        forged = jwt.encode({"aud": AUDIENCE, "exp": 2**40}, "x" * 40, algorithm="HS256")
        bad = await api.client.get("/v1/forecasts/a", headers=_bearer(forged))
        assert bad.status_code == 401


async def test_es256_keys_from_a_jwks_file_by_kid(tmp_path: Path) -> None:
    keys = {kid: ec.generate_private_key(ec.SECP256R1()) for kid in ("k1", "k2")}
    jwks: dict[str, list[dict[str, str]]] = {"keys": []}
    for kid, key in keys.items():
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        jwks["keys"].append({**jwk, "kid": kid, "use": "sig", "alg": "ES256"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    settings = api_settings(api_jwt_secret=None, api_jwt_jwks_file=path)
    async with api_in_process(settings) as api:
        for kid, key in keys.items():
            signed = token(key, algorithm="ES256", kid=kid)
            assert (await api.client.get("/v1/alerts", headers=_bearer(signed))).status_code == 200
        stranger = token(ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", kid="k9")
        response = await api.client.get("/v1/alerts", headers=_bearer(stranger))
        assert response.status_code == 401 and "kid" in response.json()["detail"]
        wrong_key = token(keys["k2"], algorithm="ES256", kid="k1")
        assert (await api.client.get("/v1/alerts", headers=_bearer(wrong_key))).status_code == 401


async def test_a_client_over_its_limit_gets_429_with_retry_after() -> None:
    settings = api_settings(api_rate_per_s=0.5, api_rate_burst=3)
    async with api_in_process(settings) as api:
        alice = _bearer(token(subject="alice"))
        codes = [(await api.client.get("/v1/alerts", headers=alice)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        refused = await api.client.get("/v1/alerts", headers=alice)
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        # another subject has its own bucket; without a token the client IP is the client
        assert (
            await api.client.get("/v1/alerts", headers=_bearer(token(subject="bob")))
        ).status_code == 200
        anonymous = [(await api.client.get("/v1/alerts")).status_code for _ in range(4)]
        assert anonymous == [401, 401, 401, 429]
        assert (await api.client.get("/healthz")).status_code == 200  # probes are never limited
        metrics = (await api.client.get("/metrics")).text
        assert "streamcast_api_rate_limited_total 3.0" in metrics


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(
        tmp_path_factory.mktemp("http") / "model.onnx", window=WINDOW, horizon=3, extras=("temp",)
    )


def _body(n: int = 12, **change: Any) -> dict[str, Any]:
    start = 1_790_000_000 // 3600 * 3600
    body: dict[str, Any] = {
        "key": "pump-1",
        "timestamps": [start + i * 3600 for i in range(n)],
        "values": [10.0 + i for i in range(n)],
        "extras": {"temp": [1.0] * n},
    }
    body.update(change)
    return body


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"values": ["1"] + [1.0] * 11}, "values[0]", "valid number"),
        ({"values": [1.0] * 11}, "values", "has 11 entries, timestamps has 12"),
        (
            {"timestamps": ["2026-09-21T10:00:00Z", "yesterday"] + [0] * 10},
            "timestamps[1]",
            "not a timestamp",
        ),
        (
            {"timestamps": [10**9 + i * 3600 for i in (0, 2, 1, *range(3, 12))]},
            "timestamps[2]",
            "strictly increasing",
        ),
        ({"timestamps": [True] * 12}, "timestamps[0]", "not a timestamp"),
        ({"extras": {}}, "extras.temp", "required by the model"),
        ({"extras": {"temp": [1.0] * 12, "rain": [0.0] * 12}}, "extras.rain", "not a feature"),
        ({"timestamps": [], "values": []}, "timestamps", "at least 1 item"),
        ({"unknown": 1}, "unknown", "Extra inputs are not permitted"),
    ],
)
async def test_bad_histories_are_422_with_the_field_and_the_reason(
    model: Path, change: dict[str, Any], field: str, says: str
) -> None:
    async with api_in_process(api_settings(api_auth="off", model_path=model)) as api:
        response = await api.client.post("/v1/predict", json=_body(**change))
        assert response.status_code == 422, response.text
        errors = response.json()["errors"]
        assert any(e["field"] == field and says in e["reason"] for e in errors), errors


async def test_history_bounds_and_a_history_too_short_to_forecast(model: Path) -> None:
    settings = api_settings(
        api_auth="off", model_path=model, api_max_history=20, api_max_body_bytes=4000
    )
    async with api_in_process(settings) as api:
        ok = await api.client.post("/v1/predict", json=_body())
        assert ok.status_code == 200, ok.text
        assert ok.json()["horizon"] == 3
        short = await api.client.post("/v1/predict", json=_body(WINDOW))
        assert short.status_code == 422 and "no forecast" in short.json()["detail"]
        long = await api.client.post("/v1/predict", json=_body(21))
        assert long.status_code == 422 and "at most 20 (api_max_history)" in long.json()["detail"]
        big = await api.client.post(
            "/v1/predict",
            content=b"{" + b" " * 5000 + b"}",
            headers={"content-type": "application/json"},
        )
        assert big.status_code == 413 and big.json()["error"] == "body_too_large"

        async def chunks() -> AsyncIterator[bytes]:  # sent chunked: no Content-Length
            yield b'{"values": ['
            yield b"1.0," * 2000
            yield b"1.0]}"

        streamed = await api.client.post(
            "/v1/predict", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413


async def test_predict_without_a_model_is_503_and_says_what_to_set() -> None:
    async with api_in_process(api_settings(api_auth="off")) as api:
        response = await api.client.post("/v1/predict", json=_body())
        assert response.status_code == 503 and "STREAMCAST_MODEL_PATH" in response.json()["detail"]


async def test_cors_is_off_by_default_and_on_for_the_configured_origins() -> None:
    preflight = {"Origin": "https://dash.example", "Access-Control-Request-Method": "GET"}
    async with api_in_process(api_settings(api_auth="off")) as api:
        response = await api.client.options("/v1/alerts", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    settings = api_settings(
        api_auth="off", api_cors_origins="https://dash.example, https://b.example"
    )
    async with api_in_process(settings) as api:
        response = await api.client.options("/v1/alerts", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://dash.example"
        other = await api.client.options(
            "/v1/alerts", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers


async def test_forecasts_in_the_row_layout_are_served_whole() -> None:
    follower = ListFollower()
    batch = ForecastBatch(
        ["pump-1", "pump-2"], np.full(2, 1_790_000_000 // 3600 * 3600),
        np.arange(6, dtype=np.float64).reshape(2, 3), "m", "1", 3600, 3, np.zeros(2, np.int64),
        levels=(0.8,), lower=np.zeros((2, 1, 3)), upper=np.full((2, 1, 3), 9.0),
    )  # fmt: skip
    rows = encode_forecast_rows(batch)
    # pump-2's last row is missing: it is not served until it arrives
    follower.feed("forecasts", rows[:-1], headers=FORECAST_ROW_HEADERS)
    async with api_in_process(api_settings(api_auth="off"), follower) as api:
        got = (await api.client.get("/v1/forecasts/pump-1")).json()
        assert got["values"] == [0.0, 1.0, 2.0] and got["targets"][0] == "2026-09-21T15:00:00Z"
        assert got["intervals"] == [{"level": 0.8, "lower": [0.0] * 3, "upper": [9.0] * 3}]
        assert (await api.client.get("/v1/forecasts/pump-2")).status_code == 404


async def test_latest_forecast_etag_listing_and_cursor() -> None:
    follower = ListFollower()
    n = 7
    batch = ForecastBatch(
        [f"pump-{i}" for i in range(n)], np.full(n, 1_790_000_000 // 3600 * 3600),
        np.arange(n * 3, dtype=np.float64).reshape(n, 3), "m", "1", 3600, 3, np.zeros(n, np.int64),
    )  # fmt: skip
    follower.feed("forecasts", [*encode_forecasts(batch), (b"pump-x", b"garbage")])
    async with api_in_process(api_settings(api_auth="off"), follower) as api:
        got = await api.client.get("/v1/forecasts/pump-3")
        assert got.status_code == 200 and got.json()["values"] == [9.0, 10.0, 11.0]
        etag = got.headers["etag"]
        again = await api.client.get("/v1/forecasts/pump-3", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.headers["etag"] == etag and again.content == b""
        other = await api.client.get("/v1/forecasts/pump-3", headers={"If-None-Match": 'W/"x"'})
        assert other.status_code == 200
        keys, cursor = [], None
        while True:
            params: dict[str, str | int] = {"prefix": "pump-", "limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = (await api.client.get("/v1/forecasts", params=params)).json()
            keys += [item["key"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert keys == sorted(f"pump-{i}" for i in range(n))
        bad = await api.client.get("/v1/forecasts", params={"cursor": "%%%"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"
        metrics = (await api.client.get("/metrics")).text
        assert 'streamcast_api_records_total{result="rejected",topic="forecasts"} 1.0' in metrics
        assert "streamcast_api_view_keys 7.0" in metrics
        assert 'route="/v1/forecasts/{key:path}",status="304"' in metrics
        # a tombstone (compacted forecasts topic) removes the key
        follower.feed("forecasts", [(b"pump-6", None)], start=100)
        for _ in range(100):
            if (await api.client.get("/v1/forecasts/pump-6")).status_code == 404:
                break
            await asyncio.sleep(0.02)
        assert (await api.client.get("/v1/forecasts/pump-6")).status_code == 404
        assert len(api.ctx.view) == n - 1


def test_api_variables_are_known_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """One environment configures serve and api: neither warns about the other's."""
    monkeypatch.setenv("STREAMCAST_API_PORT", "8401")
    monkeypatch.setenv("STREAMCAST_API_JWT_AUDENCE", "x")  # misspelt
    lines = [line for line in unknown_variables(None) if "STREAMCAST_API" in line]
    assert lines == [
        "STREAMCAST_API_JWT_AUDENCE is not a streamcast setting and is ignored: did you mean "
        "STREAMCAST_API_JWT_AUDIENCE?"
    ]


def test_without_auth_the_api_stays_on_loopback_unless_told_otherwise() -> None:
    assert load_settings({"api_auth": "off"}, None, ApiSettings).bind_host == "127.0.0.1"
    with pytest.raises(SettingsError, match="reachable from other machines"):
        load_settings({"api_auth": "off", "api_host": "0.0.0.0"}, None, ApiSettings)
    opened = load_settings(
        {"api_auth": "off", "api_host": "0.0.0.0", "api_allow_public_without_auth": True},
        None,
        ApiSettings,
    )
    assert opened.bind_host == "0.0.0.0"
    with pytest.raises(SettingsError, match="exactly one is required"):
        load_settings({}, None, ApiSettings)
    secret = load_settings(
        {"api_jwt_secret": "s" * 40, "api_jwt_audience": "a", "api_jwt_issuer": "i"},
        None,
        ApiSettings,
    )
    assert secret.bind_host == "0.0.0.0" and "s" * 40 not in repr(secret)
