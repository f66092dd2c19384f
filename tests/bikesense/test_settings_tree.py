"""The settings tree: sections read their variables, secrets never print, errors name variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from bikesense.exceptions import ConfigurationError
from bikesense.policy import PrivacyPolicy
from bikesense.settings import SecretSettings, Settings, load_settings, variables

#: Every variable the operator documentation names, and where it lands in the tree.
DOCUMENTED = {
    "BIKESENSE_DATABASE_URL": "services.database_url",
    "BIKESENSE_MQTT_URL": "services.mqtt_url",
    "BIKESENSE_KAFKA_URL": "services.kafka_url",
    "BIKESENSE_STATE_DIR": "services.state_dir",
    "BIKESENSE_PG_BINDIR": "services.pg_bindir",
    "BIKESENSE_KAFKA_CACHE_DIR": "services.kafka_cache_dir",
    "BIKESENSE_KAFKA_APP_ID": "kafka.app_id",
    "BIKESENSE_KAFKA_PARTITIONS": "kafka.partitions",
    "BIKESENSE_H3_RESOLUTIONS": "aggregation.h3_resolutions",
    "BIKESENSE_WINDOW_SIZES_S": "aggregation.window_sizes_s",
    "BIKESENSE_PRIVACY_ZONES_FILE": "privacy.zones_file",
    "BIKESENSE_PRIVACY_TRIM_START_S": "privacy.trim_start_s",
    "BIKESENSE_PRIVACY_TRIM_END_S": "privacy.trim_end_s",
    "BIKESENSE_DAY_TZ": "privacy.day_tz",
    "BIKESENSE_PUBLIC_MIN_RIDES": "privacy.public_min_rides",
    "BIKESENSE_PUBLIC_MIN_DAYS": "privacy.public_min_days",
    "BIKESENSE_PUBLIC_MIN_WINDOW_S": "privacy.public_min_window_s",
    "BIKESENSE_RAW_RETENTION_DAYS": "privacy.raw_retention_days",
    "BIKESENSE_API_HOST": "api.host",
    "BIKESENSE_API_PORT": "api.port",
    "BIKESENSE_STATEMENT_TIMEOUT_S": "api.statement_timeout_s",
    "BIKESENSE_BASEMAP_FILE": "api.basemap_file",
    "BIKESENSE_KIT_MASTER_KEY": "secrets.kit_master_key",
    "BIKESENSE_KIT_MASTER_KEY_FILE": "secrets.kit_master_key_file",
    "BIKESENSE_PSEUDONYM_KEY": "secrets.pseudonym_key",
    "BIKESENSE_PSEUDONYM_KEY_FILE": "secrets.pseudonym_key_file",
    "BIKESENSE_MQTT_INGEST_PASSWORD": "secrets.mqtt_ingest_password",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in variables():
        monkeypatch.delenv(name, raising=False)


def test_each_variable_fills_the_setting_of_its_section(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {v: variables()[v] for v in DOCUMENTED} == DOCUMENTED
    monkeypatch.setenv("BIKESENSE_PRIVACY_TRIM_END_S", "120")
    monkeypatch.setenv("BIKESENSE_PUBLIC_MIN_RIDES", "5")
    monkeypatch.setenv("BIKESENSE_KAFKA_PARTITIONS", "4")
    monkeypatch.setenv("BIKESENSE_API_PORT", "9001")
    monkeypatch.setenv("BIKESENSE_H3_RESOLUTIONS", "[10, 8]")
    settings = load_settings()
    assert settings.privacy.trim_end_s == 120.0
    assert settings.privacy.public_min_rides == 5
    assert settings.kafka.partitions == 4
    assert settings.api.port == 9001
    assert settings.aggregation.h3_resolutions == (8, 10)
    # Defaults where nothing is set, each written once.
    assert settings.privacy.public_min_days == 1
    assert settings.services.database_url is None
    assert Settings() == settings  # the tree reads the same environment


def test_overrides_name_a_field_of_any_section_and_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIKESENSE_PUBLIC_MIN_RIDES", "5")
    settings = load_settings(public_min_rides=7, database_url="postgresql://u@h/d", trim_start_s=60)
    assert settings.privacy.public_min_rides == 7
    assert settings.privacy.trim_start_s == 60.0
    assert settings.services.database_url == "postgresql://u@h/d"
    with pytest.raises(ConfigurationError, match="no setting is named 'public_k'"):
        load_settings(public_k=3)


def test_every_bad_value_is_named_by_its_variable_in_one_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BIKESENSE_API_PORT", "eighty")
    monkeypatch.setenv("BIKESENSE_PRIVACY_TRIM_END_S", "-1")
    monkeypatch.setenv("BIKESENSE_KAFKA_APP_ID", "two words")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(mqtt_url="http://broker")
    message = str(caught.value)
    for variable in (
        "BIKESENSE_API_PORT",
        "BIKESENSE_PRIVACY_TRIM_END_S",
        "BIKESENSE_KAFKA_APP_ID",
        "BIKESENSE_MQTT_URL",
    ):
        assert f"{variable}: " in message


def test_secrets_never_show_in_a_repr_or_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIKESENSE_KIT_MASTER_KEY", "k1:c2VjcmV0LW1hc3Rlci1rZXktdGV4dA==")
    monkeypatch.setenv("BIKESENSE_MQTT_INGEST_PASSWORD", "hunter2-ingest")
    settings = load_settings(pseudonym_key="pseudonym-secret-text")
    shown = f"{settings!r} {settings} {settings.secrets!r} {settings.model_dump()}"
    for secret in ("c2VjcmV0LW1hc3Rlci1rZXktdGV4dA==", "hunter2-ingest", "pseudonym-secret-text"):
        assert secret not in shown
    assert SecretSettings.text(settings.secrets.mqtt_ingest_password) == "hunter2-ingest"
    assert SecretSettings.text(settings.secrets.pseudonym_key) == "pseudonym-secret-text"
    assert SecretSettings.text(load_settings(pseudonym_key="").secrets.pseudonym_key) is None


def test_the_policy_is_built_once_from_the_settings(tmp_path: Path) -> None:
    zones = tmp_path / "zones.json"
    zones.write_text('[{"name": "depot", "lat_deg": 52.1, "lon_deg": 4.6, "radius_m": 150}]')
    settings = load_settings(
        zones_file=zones,
        trim_start_s=120,
        public_min_rides=4,
        public_min_days=2,
        public_min_window_s=900,
        h3_resolutions=(8, 9, 10),
        window_sizes_s=(60, 900, 3600),
    )
    policy = PrivacyPolicy.from_settings(settings)
    zones.unlink()  # read once: the policy keeps what it read
    assert len(policy.core().zones) == 1
    assert policy.core().trim_start_s == 120.0
    assert policy.allowed_windows("public") == (900, 3600)
    assert policy.allowed_windows("officer") == (60, 900, 3600)
    assert policy.public_units() == (10, 900)
    public = policy.thresholds("public")
    assert (public.min_rides, public.min_days, public.unit_resolution) == (4, 2, 10)
    assert policy.thresholds("officer").min_rides == 0
    assert not policy.bucket_allowed("public", 60)
    assert policy.bucket_allowed("officer", 60)
    assert [
        r for r in ("public", "officer", "researcher", "admin") if policy.may_export_raw(r)
    ] == [
        "researcher",
        "admin",
    ]
    assert not policy.shows_stored_identities("researcher")
    assert policy.shows_stored_identities("admin")
    assert {"kit_id", "received_at"} <= policy.withheld_from_pseudonymous
    assert not policy.live_cells("public")
    assert policy.live_cells("officer")


def test_a_zones_file_that_cannot_be_read_is_a_configuration_error(tmp_path: Path) -> None:
    settings = load_settings(zones_file=tmp_path / "missing.json")
    with pytest.raises(ConfigurationError, match="BIKESENSE_PRIVACY_ZONES_FILE: cannot read"):
        PrivacyPolicy.from_settings(settings)
