"""Kafka plumbing shared by the worker and the refresher: connection settings, batched
produce, dead letters, topic creation, consumer construction, rebalance callbacks and the
consumer-lag gauge. Lives below ``streams`` and ``serving`` so neither imports the other."""
