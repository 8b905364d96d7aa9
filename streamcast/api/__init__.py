"""The forecast API (``streamcast api``): a materialised latest-per-key view of the
forecasts and alerts topics, served over HTTP by FastAPI in a process of its own.

=============== ==========================================================================
module          holds
=============== ==========================================================================
server          the process: phases, uvicorn, signals
app             the FastAPI routes, errors, middleware wiring, the page
view            the latest forecast per key in compact memory, eviction, listing
alerts          recent alerts, bounded per key and overall
feed            the topics -> view, alert log and event streams; readiness
events          the per-key event streams (server-sent events)
predict         ``POST /v1/predict``: a fresh core pipeline per posted history
auth            bearer JWT (HS256, RS256/ES256 keys, JWKS), scopes
limits          per-client token buckets
metrics         Prometheus metrics and the measuring and body-limit middlewares
documents       the JSON documents answered, and their OpenAPI models
static/         the live page (one HTML file, vanilla JS and inline SVG)
=============== ==========================================================================

The package sits beside :mod:`streamcast.service` (neither imports the other); it reads
Kafka only through :mod:`streamcast.kafka.follow`.
"""
