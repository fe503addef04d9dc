"""Process plumbing shared by every ``lte`` process: Kafka client settings (TLS/SASL), the
status HTTP server (``/metrics``, ``/healthz``, ``/readyz``), logging, shutdown signals."""
