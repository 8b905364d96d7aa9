"""The service runtime: the lifecycle phases, the batch processor and loop, retries and
waits, health endpoints, metrics and logs. It drives the pure core through the Kafka edge.
"""
