"""The Kafka edge: wire types, aiokafka clients, topics, publishing, the state changelog,
and the two sinks (at-least-once and exactly-once) the service runs its batches through.

Everything aiokafka is confined to this package: its errors are mapped to streamcast's
own (:mod:`streamcast.errors`) by :func:`streamcast.kafka.errors.map_kafka_errors`, so no
layer above imports aiokafka.
"""
