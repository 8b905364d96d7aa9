#!/usr/bin/env bash
# Create streamcast's topics on a broker where auto-creation is off (as it should be).
# Idempotent: existing topics are kept, then checked. Runs in the apache/kafka image
# (docker-compose's `topics` job) or anywhere kafka-topics.sh is on hand:
#
#   KAFKA_BOOTSTRAP=broker:9092 TICKS_PARTITIONS=12 deploy/compose/create-topics.sh
#
# Secured clusters: KAFKA_COMMAND_CONFIG names a client properties file (security.protocol,
# sasl.mechanism, sasl.jaas.config, ssl.truststore.location, ...) passed as
# --command-config; REPLICATION_FACTOR (default 1) should be 3 in production.
#
# Topic names come from the variables the service reads (STREAMCAST_TOPICS__TICKS and
# its siblings), so the job and the service cannot disagree; the defaults equal
# streamcast.config's.
set -euo pipefail

bootstrap=${KAFKA_BOOTSTRAP:-kafka:9092}
partitions=${TICKS_PARTITIONS:-6}
replication=${REPLICATION_FACTOR:-1}
kafka_topics=${KAFKA_TOPICS_SH:-/opt/kafka/bin/kafka-topics.sh}
client=(--bootstrap-server "$bootstrap")
if [[ -n "${KAFKA_COMMAND_CONFIG:-}" ]]; then
  client+=(--command-config "$KAFKA_COMMAND_CONFIG")
fi

ticks=${STREAMCAST_TOPICS__TICKS:-ticks}
forecasts=${STREAMCAST_TOPICS__FORECASTS:-forecasts}
alerts=${STREAMCAST_TOPICS__ALERTS:-alerts}
dead_letter=${STREAMCAST_TOPICS__DEAD_LETTER:-ticks.dead-letter}
state=${STREAMCAST_TOPICS__STATE_CHANGELOG:-streamcast-state-changelog}

create() {
  local name=$1
  shift
  "$kafka_topics" "${client[@]}" --create --if-not-exists \
    --topic "$name" --replication-factor "$replication" "$@"
}

partition_count() {
  "$kafka_topics" "${client[@]}" --describe --topic "$1" \
    | sed -n 's/.*PartitionCount: *\([0-9][0-9]*\).*/\1/p' | head -n 1
}

# Ticks set the parallelism: one consumer-group member per partition at most.
create "$ticks" --partitions "$partitions"
# Forecasts and alerts are keyed by series key like ticks; the same count keeps each
# key's output in order on one partition and spreads downstream consumers alike.
create "$forecasts" --partitions "$partitions"
create "$alerts" --partitions "$partitions"
# Rejected input is kept for two weeks for inspection and replay.
create "$dead_letter" --partitions "$partitions" --config retention.ms=1209600000
# Per-key state: compacted (latest record per key survives), partitioned exactly like
# ticks (state of ticks partition p lives in changelog partition p). Short segments and
# an eager cleaner keep restore reads close to one record per key.
create "$state" --partitions "$partitions" \
  --config cleanup.policy=compact \
  --config segment.ms=3600000 \
  --config min.cleanable.dirty.ratio=0.1

ticks_count=$(partition_count "$ticks")
state_count=$(partition_count "$state")
if [[ "$ticks_count" != "$state_count" ]]; then
  echo "create-topics: $ticks has $ticks_count partitions but $state has $state_count;" \
    "the state changelog must be partitioned exactly like the ticks topic" >&2
  exit 1
fi
echo "create-topics: $ticks, $forecasts, $alerts, $dead_letter, $state ready" \
  "($ticks_count partitions) on $bootstrap"
