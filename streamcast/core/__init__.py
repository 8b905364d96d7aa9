"""The pure core: ticks in, forecasts out, per-key state in arrays.

Features and scaling, the model artifact's metadata, tick decoding, event-time
aggregation, the state store, the key lifecycle, the batched pipeline and the ONNX step
model. Nothing here does I/O or awaits, and nothing imports from the layers above
(``streamcast.kafka``, ``streamcast.service``, ``streamcast.api``, ``streamcast.tools``):
see ``docs/architecture.md``.
"""
