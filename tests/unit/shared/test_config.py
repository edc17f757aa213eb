from pathlib import Path

import pytest
import yaml

from shared.config import ConfigError, load_settings

FILE = """
default:
  kafka: {bootstrap_servers: "file:9092", topic_partitions: 6, replication_factor: 1, linger_ms: 5,
          delivery_timeout_ms: 30000, session_timeout_ms: 10000, max_poll_interval_ms: 900000,
          security_protocol: PLAINTEXT, consumer_queue_kb: 4096}
  mongo: {uri: "mongodb://file:27017", server_selection_timeout_ms: 1000, socket_timeout_ms: 1000}
  consumer: {max_attempts: 3, backoff_base_s: 1.0, backoff_max_s: 30, max_batch: 500, batch_linger_ms: {},
             inbox_retention_s: 604800, inbox_prune_interval_s: 3600}
  outbox: {retry_interval_s: 1, clear_interval_s: 0.5, api_backlog_limit: 5000, api_backlog_wait_s: 5,
           recover_interval_s: 300, scan_timeout_s: 300}
  saga: {payment_timeout_s: 60, order_timeout_s: 300, timer_interval_s: 1, max_in_flight: 200,
         admission_target_s: null, admission_count_interval_s: 0.5, timer_batch: 100,
         timer_flush_interval_s: 0.1, reconcile_interval_s: 300, cache_size: 2000, max_write_attempts: 10}
  order: {idempotency_key_purge_interval_s: 3600}
  inventory: {reservation_ttl_s: 900, expiry_interval_s: 30}
  payment: {decline_cards: ["4000000000000002"], amount_limit: 10000, latency_ms: 0, failure_rate: 0,
            ledger_path: "", charges_per_write: 50, vault_ttl_s: 3600}
  notification: {sender: log, file_path: x, smtp_host: h, smtp_port: 25, smtp_from: a@b.c, sends_per_write: 50}
  monitoring: {health_poll_interval_s: 5, health_timeout_s: 2, timeline_limit: 10,
               recent_events_kept: 1000, open_orders_checked: 100, housekeeping_interval_s: 10, flush_interval_s: 1,
               alerts: {error_rate: 0.1, error_rate_window_min: 15, slow_order_s: 30, stuck_saga_s: 60, dlq_growth: 1}}
  http: {max_content_length: 2048, workers: 2, threads: 2, cors_origins: [], trusted_hosts: [], proxies: 0,
         https_redirect: false, compress_min_bytes: 0}
  logging: {level: INFO, format: json}
  auth: {mode: "on", algorithms: [HS256], issuer: i, audience: a, clock_skew_s: 30, key_cache_s: 5, database: auth}
  rate_limits: {enabled: true, customer_writes: 1/second, key_writes: 1/second, address_writes: 1/second,
                order_creation: 1/second, reservations: 1/second, card_charges: 1/second}
  services:
    order: {host: 127.0.0.1, port: 5011, database: orders}
production:
  logging: {level: WARNING}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(FILE)
    return path


def test_environment_section_overrides_the_defaults(config_file):
    settings = load_settings(environment="production", env={}, config_file=config_file)
    assert settings.logging.level == "WARNING"
    assert settings.kafka.bootstrap_servers == "file:9092"


def test_environment_variables_override_the_file(config_file):
    env = {"KAFKA_BOOTSTRAP_SERVERS": "env:9092", "ORDER_PORT": "6011", "APP__SAGA__PAYMENT_TIMEOUT_S": "5"}
    settings = load_settings("order", env=env, config_file=config_file)
    assert settings.kafka.bootstrap_servers == "env:9092"
    assert settings.kafka.external is True
    assert settings.this.port == 6011
    assert settings.saga.payment_timeout_s == 5


def test_explicit_overrides_win_over_environment_variables(config_file):
    settings = load_settings(
        env={"APP__SAGA__ORDER_TIMEOUT_S": "7"}, overrides={"saga": {"order_timeout_s": 9}}, config_file=config_file
    )
    assert settings.saga.order_timeout_s == 9


def test_secrets_come_from_the_environment_and_are_not_printed(config_file):
    settings = load_settings(env={"MONGO_USERNAME": "app", "MONGO_PASSWORD": "s3cret"}, config_file=config_file)
    assert settings.mongo.username == "app"
    assert settings.mongo.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_a_bad_value_fails_with_a_message_naming_the_key(config_file):
    with pytest.raises(ConfigError, match=r"kafka\.topic_partitions"):
        load_settings(env={"APP__KAFKA__TOPIC_PARTITIONS": "zero"}, config_file=config_file)


def test_an_unknown_environment_is_refused(config_file):
    with pytest.raises(ConfigError, match="ENVIRONMENT"):
        load_settings(env={"ENVIRONMENT": "staging-ish"}, config_file=config_file)


def test_an_unknown_key_is_refused(config_file):
    with pytest.raises(ConfigError, match=r"saga\.payment_timeout"):
        load_settings(env={"APP__SAGA__PAYMENT_TIMEOUT": "5"}, config_file=config_file)


def test_the_repository_config_file_loads_for_every_environment():
    for environment in ("development", "test", "production"):
        settings = load_settings("order", environment=environment, env={})
        assert settings.services["monitoring"].port == 5006
        assert settings.services["payment"].port == 6002


@pytest.mark.parametrize(
    ("variable", "value", "path", "expected"),
    [
        ("APP__SERVICES__ORDER__PORT", "05011", ("services", "order", "port"), 5011),
        ("APP__HTTP__WORKERS", "010", ("http", "workers"), 10),
        ("APP__MONGO__PASSWORD", "s3cret #1", ("mongo", "password"), "s3cret #1"),
        ("APP__MONGO__PASSWORD", "*abc", ("mongo", "password"), "*abc"),
        ("APP__PAYMENT__DECLINE_CARDS", '["4000000000000002", "4111"]', ("payment", "decline_cards"),
         ("4000000000000002", "4111")),
        ("APP__MONGO__EXTERNAL", "false", ("mongo", "external"), False),
    ],
)  # fmt: skip
def test_environment_overrides_mean_what_they_say(config_file, variable, value, path, expected):
    node = load_settings("order", env={variable: value}, config_file=config_file)
    for part in path:
        node = getattr(node, part) if not isinstance(node, dict) else node[part]
    if hasattr(node, "get_secret_value"):
        node = node.get_secret_value()
    assert node == expected


def test_a_malformed_json_override_names_the_variable(config_file):
    with pytest.raises(ConfigError, match="APP__PAYMENT__DECLINE_CARDS"):
        load_settings(env={"APP__PAYMENT__DECLINE_CARDS": "[oops"}, config_file=config_file)


def test_a_batch_linger_is_set_per_service_and_defaults_to_none(config_file):
    env = {"APP__CONSUMER__BATCH_LINGER_MS": '{"monitoring": 500, "order": 100}'}
    consumer = load_settings("order", env=env, config_file=config_file).consumer
    assert consumer.linger_s("monitoring") == 0.5
    assert consumer.linger_s("order") == 0.1
    assert consumer.linger_s("orchestrator") == 0.0  # on the saga's path: takes what is fetched
    assert consumer.linger_s(None) == 0.0


@pytest.mark.parametrize(
    ("value", "named"),
    [('{"monitor": 500}', "monitor"), ('{"monitoring": -1}', "monitoring"), ('{"order": 60000}', "order")],
)
def test_a_batch_linger_for_an_unknown_service_or_out_of_range_is_refused(config_file, value, named):
    with pytest.raises(ConfigError, match=rf"consumer\.batch_linger_ms\.{named}"):
        load_settings(env={"APP__CONSUMER__BATCH_LINGER_MS": value}, config_file=config_file)


def test_the_repository_config_lingers_only_off_the_saga_path():
    consumer = load_settings("order", environment="development", env={}).consumer
    on_the_path = ("orchestrator", "inventory", "payment")
    assert all(consumer.linger_s(service) == 0 for service in on_the_path)
    assert all(consumer.linger_s(service) > 0 for service in ("order", "notification", "monitoring"))


@pytest.mark.parametrize(
    ("saga", "target"),
    [
        ({"payment_timeout_s": 60, "order_timeout_s": 300}, 30),  # half the payment deadline
        ({"payment_timeout_s": 200, "order_timeout_s": 300}, 75),  # a quarter of the order deadline
        ({"payment_timeout_s": 60, "order_timeout_s": 300, "admission_target_s": 90}, 90),  # as set
    ],
)
def test_the_admission_target_ends_sagas_before_their_payment_deadline(config_file, saga, target):
    settings = load_settings("orchestrator", overrides={"saga": saga}, env={}, config_file=config_file)
    assert settings.saga.admission_target == target


def test_every_key_of_the_default_layer_has_its_one_default_there():
    """A key config.yaml's default layer sets has no default in its model as well (the two would drift)."""
    from pydantic import BaseModel

    from shared.config import CONFIG_FILE, Settings

    def twice(model: type[BaseModel], layer: dict, path: str) -> list[str]:
        found = []
        for name, value in layer.items():
            field = model.model_fields[name]
            if not field.is_required():
                found.append(f"{path}{name}")
            if (
                isinstance(value, dict)
                and isinstance(field.annotation, type)
                and issubclass(field.annotation, BaseModel)
            ):
                found += twice(field.annotation, value, f"{path}{name}.")
        return found

    default = yaml.safe_load(CONFIG_FILE.read_text())["default"]
    assert twice(Settings, default, "") == []
