"""``streamcast api``: the API process, in explicit phases (as the service's).

1. **startup** — read the key files and the model (fail fast with one line), build the
   view, alert log, event hub, feed and app, bind the port.
2. **serving** — uvicorn answers requests while the feed (one task in the same
   ``TaskGroup``) restores the view from the beginning of the topics and then follows
   them; ``/readyz`` turns 200 once it caught up. Beside them the model follower
   (:mod:`streamcast.api.models`) swaps in each new good artifact of the model path.
3. **shutdown** — a first SIGTERM/SIGINT stops the feed, ends every event stream and lets
   uvicorn finish the requests in flight (at most :data:`GRACEFUL_S`); a second exits at
   once. A permanent feed failure (authorization, settings) shuts the server down and is
   raised, so the process exits non-zero with one line.

The API runs in its own process: the service's latency never depends on HTTP traffic,
and API replicas scale on their own (each reads the whole topics and answers every key).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator

import uvicorn

from streamcast.api.alerts import AlertLog
from streamcast.api.app import ApiContext, create_app
from streamcast.api.auth import Authenticator
from streamcast.api.events import EventHub
from streamcast.api.feed import FollowerFactory, ViewFeed
from streamcast.api.limits import TokenBuckets
from streamcast.api.metrics import ApiMetrics
from streamcast.api.models import ModelFollower
from streamcast.api.predict import Predictor
from streamcast.api.view import ForecastView
from streamcast.config import ApiSettings
from streamcast.core.listening import listen
from streamcast.core.models_dir import Refusal, Stamp, choose_model
from streamcast.kafka.follow import TopicFollower

log = logging.getLogger(__name__)

#: how long requests in flight may take to finish after a stop
GRACEFUL_S = 5.0


class _PlainMessages(logging.Filter):
    """Drops the ANSI-coloured copy uvicorn attaches to its messages (our log formats
    would print it as a field)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record, without ``color_message``."""
        record.__dict__.pop("color_message", None)
        return True


logging.getLogger("uvicorn.error").addFilter(_PlainMessages())


def _refused(refusal: Refusal) -> None:
    """The one log line of a newer artifact the API passed over at start."""
    log.error(
        f"model {refusal.stamp.path} refused: {refusal.problem}; "
        "POST /v1/predict serves an older one if it passes",
        extra={"path": str(refusal.stamp.path)},
    )


def build_context(settings: ApiSettings, follower: FollowerFactory | None = None) -> ApiContext:
    """Everything the app needs, from the settings (reads key files and the model)."""
    metrics = ApiMetrics()
    view = ForecastView(settings.api_max_keys)
    alerts = AlertLog(settings.api_alerts_per_key, settings.api_alerts_max)
    hub = EventHub(settings.api_max_streams)
    topics = settings.topics

    def kafka_follower() -> TopicFollower:
        return TopicFollower(settings, [topics.forecasts, topics.alerts])

    feed = ViewFeed(
        follower or kafka_follower,
        forecasts_topic=topics.forecasts,
        alerts_topic=topics.alerts,
        view=view,
        alerts=alerts,
        hub=hub,
        metrics=metrics,
    )
    predictor, models = None, None
    if settings.model_path is not None:
        # the service's model path: one file, or a models directory whose newest good
        # artifact serves (the one the service starts with), followed as the service does
        refused: set[Stamp] = set()

        def refuse(refusal: Refusal) -> None:
            _refused(refusal)
            metrics.model_swaps.labels("refused").inc()
            refused.add(refusal.stamp)

        chosen = choose_model(settings.model_path, settings.intra_op_threads, refuse)
        predictor = Predictor.load(
            chosen,
            intra_op_threads=settings.intra_op_threads,
            max_history=settings.api_max_history,
            workers=settings.api_predict_workers,
        )
        models = ModelFollower(
            predictor, settings.model_path, chosen, poll_s=settings.model_poll_s,
            intra_op_threads=settings.intra_op_threads, metrics=metrics, refused=refused,
        )  # fmt: skip
        log.info(
            "predicting with the model",
            extra={"path": str(chosen), "model_version": predictor.model.meta.version},
        )
    return ApiContext(
        settings=settings,
        view=view,
        alerts=alerts,
        hub=hub,
        feed=feed,
        auth=Authenticator.from_settings(settings),
        buckets=TokenBuckets(
            settings.api_rate_per_s, settings.api_rate_burst, settings.api_rate_clients
        ),
        metrics=metrics,
        predictor=predictor,
        models=models,
    )


class ApiServer(uvicorn.Server):
    """uvicorn's server, with signals left to :func:`serve_api` (a signal only sets a flag)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """No signal handling of uvicorn's own (it would re-raise the signal on exit)."""
        yield


async def serve_api(
    settings: ApiSettings,
    *,
    follower: FollowerFactory | None = None,
    on_listening: Callable[[str, int], None] | None = None,
) -> None:
    """Run the API until SIGTERM/SIGINT (module docstring). The address actually bound is
    logged (``api_port=0`` picks a free port) and passed to ``on_listening``."""
    # bound first: an address it cannot listen on is one line naming the setting (uvicorn
    # would log it and exit), before any Kafka client exists
    sockets = listen(
        settings.bind_host,
        settings.api_port,
        what="the forecast API",
        host_setting="STREAMCAST_API_HOST (--api-host)",
        port_setting="STREAMCAST_API_PORT (--api-port)",
    )
    try:
        ctx = build_context(settings, follower)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    config = uvicorn.Config(
        create_app(ctx),
        host=settings.bind_host,
        port=settings.api_port,
        lifespan="off",
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.api_forwarded_allow_ips,
        timeout_graceful_shutdown=int(GRACEFUL_S),
        server_header=False,
    )
    server = ApiServer(config)
    stopping = asyncio.Event()
    signals = 0
    failure: list[Exception] = []

    def stop() -> None:
        stopping.set()
        ctx.hub.close()
        server.should_exit = True

    def on_signal(sig: int) -> None:
        nonlocal signals
        signals += 1
        log.info("signal received", extra={"signal": signal.Signals(sig).name})
        stop()
        server.force_exit = signals > 1

    async def feed() -> None:
        try:
            await ctx.feed.run(stopping)
        except Exception as err:  # noqa: BLE001 - raised again once the server is down
            log.error("the view's feed failed; stopping", extra={"error": str(err)})  # noqa: TRY400
            failure.append(err)
            stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(feed(), name="view-feed")
            tasks.create_task(_announce(server, on_listening), name="announce")
            if ctx.models is not None:
                tasks.create_task(ctx.models.run(stopping), name="model-follower")
            await server.serve(sockets=sockets)
            stop()
    finally:
        for sock in sockets:
            sock.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if ctx.predictor is not None:
            ctx.predictor.close()
    if failure:
        raise failure[0]


async def _announce(server: ApiServer, on_listening: Callable[[str, int], None] | None) -> None:
    """Log (and report) the bound address once uvicorn has started."""
    while not server.started and not server.should_exit:  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.02)
    sockets = [sock for srv in server.servers for sock in (srv.sockets or ())]
    if server.started and sockets:
        host, port = sockets[0].getsockname()[:2]
        log.info("api listening", extra={"url": f"http://{host}:{port}"})
        if on_listening is not None:
            on_listening(str(host), int(port))
