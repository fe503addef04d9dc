"""Kafka client settings: every refusal names its flag, and the secret never leaks."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from lte_cli.main import cli
from lte_cli.worker_cmd import parse_type_weights
from lte_core.errors import ConfigError
from lte_runtime.kafka.settings import KafkaSettings


def test_fetch_wait_reaches_consumers_only() -> None:
    settings = KafkaSettings(bootstrap="127.0.0.1:9092", fetch_max_wait_ms=20)
    assert settings.consumer_kwargs()["fetch_max_wait_ms"] == 20
    # aiokafka's producer and admin client reject a fetch setting.
    assert "fetch_max_wait_ms" not in settings.client_kwargs()


@pytest.mark.parametrize("wait", [0, -5, 10_001])
def test_fetch_wait_out_of_range_names_the_flag(wait: int) -> None:
    with pytest.raises(ConfigError, match="--kafka-fetch-max-wait-ms"):
        KafkaSettings(bootstrap="127.0.0.1:9092", fetch_max_wait_ms=wait)


def test_sasl_needs_mechanism_and_credentials() -> None:
    with pytest.raises(ConfigError, match="--kafka-sasl-mechanism"):
        KafkaSettings(bootstrap="b:9092", security_protocol="SASL_SSL")
    with pytest.raises(ConfigError, match="LTE_KAFKA_SASL_PASSWORD"):
        KafkaSettings(
            bootstrap="b:9092",
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username="svc",
        )


def test_password_is_never_described() -> None:
    settings = KafkaSettings(
        bootstrap="b:9092",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password="s3cret-value",  # noqa: S106 - a test value, checked not to leak
    )
    assert "s3cret-value" not in settings.describe()
    assert "svc" in settings.describe()
    for text in (repr(settings), str(settings), f"{settings!r} {settings}"):
        assert "s3cret-value" not in text
    assert "sasl_username='svc'" in repr(settings)


def test_cli_refuses_a_bad_fetch_wait_with_the_flag_name() -> None:
    result = CliRunner().invoke(
        cli,
        ["refresher", "--kafka-fetch-max-wait-ms", "0", "--store", "redis://127.0.0.1:1"],
    )
    assert result.exit_code != 0
    assert "--kafka-fetch-max-wait-ms" in result.output


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "0", "-1", "1e400"])
def test_type_weights_refuse_non_finite_and_non_positive_weights_naming_the_flag(
    value: str,
) -> None:
    with pytest.raises(ConfigError, match="--type-weights"):
        parse_type_weights(f"view=1,cart={value}")
    assert parse_type_weights("view=1,cart=3.5") == {"view": 1.0, "cart": 3.5}


@pytest.mark.parametrize(
    ("given", "bootstrap"),
    [
        ("h1:9092", "h1:9092"),
        ("kafka://h1:9092", "h1:9092"),
        ("KAFKA://h1:9092/", "h1:9092"),
        ("kafka://h1:9092, h2:9093", "h1:9092,h2:9093"),
        ("h1:9092,kafka://h2:9093", "h1:9092,h2:9093"),
        ("h1:9092,,", "h1:9092"),
    ],
)
def test_broker_accepts_faust_spelling(given: str, bootstrap: str) -> None:
    settings = KafkaSettings(bootstrap=given)
    assert settings.bootstrap == bootstrap
    assert settings.client_kwargs()["bootstrap_servers"] == bootstrap


@pytest.mark.parametrize("given", ["", " , ", "redis://h1:6379", "kafka://"])
def test_broker_refusals_name_the_flag(given: str) -> None:
    with pytest.raises(ConfigError, match="--broker"):
        KafkaSettings(bootstrap=given)
