"""sync2.json (OpenMRS schema) and node settings: the samples load, errors name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhirsync.errors import ConfigurationError
from fhirsync.settings import load_sync2, parse_node_settings, parse_sync2, redacted_url

SAMPLES = (
    "defaultSyncConfiguration",
    "sampleSyncConfiguration",
    "sampleSyncConfiguration2",
    "noWhitelistConfiguration",
)


@pytest.mark.parametrize("name", SAMPLES)
def test_openmrs_samples_load_unchanged(reference_dir: Path, name: str) -> None:
    path = reference_dir / "openmrs" / "sync2" / f"{name}.json"
    config = load_sync2(path)
    raw = json.loads(path.read_text())
    assert [c.category for c in config.pull.classes] == [
        c["category"] for c in raw["pull"]["classes"]
    ]
    assert config.pull.enabled == raw["pull"]["enabled"]


def test_whitelist_defaults_when_absent(reference_dir: Path) -> None:
    config = load_sync2(reference_dir / "openmrs/sync2/noWhitelistConfiguration.json")
    assert config.whitelist.enabled is False
    assert config.whitelist.instance_ids == []


def test_client_override_is_read(reference_dir: Path) -> None:
    config = load_sync2(reference_dir / "openmrs/sync2/sampleSyncConfiguration2.json")
    assert "rest" in config.general.clients
    assert config.general.clients["rest"].host_address


def test_incorrect_file_is_rejected_with_its_position(reference_dir: Path) -> None:
    path = reference_dir / "openmrs/sync2/incorrectSyncConfiguration.json"
    with pytest.raises(ConfigurationError) as info:
        load_sync2(path)
    assert "line 20" in str(info.value)
    assert "incorrectSyncConfiguration.json" in str(info.value)


def test_unknown_key_names_the_field() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_sync2({"general": {"parentFeedLocation": "x", "bogus": 1}})
    assert info.value.field == "general.bogus"


@pytest.mark.parametrize(
    "url",
    [
        "parent.example.org:8080",
        "ftp://parent",
        "http://",
        # A traceback from urlsplit; then pulls said "parent unreachable" (exit 3) for a port
        # no server can have.
        "http://[::1",
        "http://127.0.0.1:99999",
        "http://parent:80a",
    ],
)
def test_a_parent_url_that_is_no_http_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_sync2({"general": {"parentFeedLocation": url}})
    assert info.value.field == "general.parentFeedLocation"
    assert "parentFeedLocation" in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("localInstanceId", "i" * 256),
        ("localInstanceId", "clinic\u0000a"),
        ("parentFeedLocation", "http://parent/" + "p" * 250),
    ],
)
def test_an_origin_the_store_cannot_keep_is_refused(field: str, value: str) -> None:
    # Local writes (the instance id) and records pulled from a Java parent (its URL) carry it as
    # their origin: PostgreSQL answered every such write with a 500.
    with pytest.raises(ConfigurationError, match="at most 255 characters") as info:
        parse_sync2({"general": {field: value}})
    assert info.value.field == f"general.{field}"


def test_a_parent_url_password_is_not_repeated_in_the_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_sync2({"general": {"parentFeedLocation": "htp://admin:s3cret@parent"}})
    assert "s3cret" not in str(info.value)


def test_wrong_type_names_the_field_and_value() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_sync2({"pull": {"enabled": "often"}})
    assert info.value.field == "pull.enabled"
    assert "'often'" in str(info.value)


def test_enabled_without_schedule_is_rejected() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_sync2({"push": {"enabled": True, "classes": []}})
    assert info.value.field == "push.schedule"


def test_node_settings_errors_name_the_field() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_node_settings({"feed_page_size": 0})
    assert info.value.field == "feed_page_size"
    with pytest.raises(ConfigurationError) as info:
        parse_node_settings({"no_such_setting": 1})
    assert info.value.field == "no_such_setting"
    with pytest.raises(ConfigurationError):
        parse_node_settings({"db_url": "mysql://x"})


def test_errors_never_show_a_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_node_settings({"db_url": "mysql://sync:Hunter2-pw@db.example/clinic"})
    assert info.value.field == "db_url"
    assert "Hunter2" not in str(info.value)
    assert "'mysql://sync:***@db.example/clinic'" in str(info.value)  # the rest still helps
    with pytest.raises(ConfigurationError) as info:
        parse_node_settings({"parent_password": 12345678})
    assert info.value.field == "parent_password"
    assert "12345678" not in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        parse_sync2({"general": {"clients": {"fhir": {"password": ["Hunter2"]}}}})
    assert "Hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://sync:s3cr%40t@db:5432/n", "postgresql+psycopg://sync:***@db:5432/n"),
        ("postgresql+psycopg://sync@db/n", "postgresql+psycopg://sync@db/n"),
        ("postgresql+psycopg://u:p@w@db/n", "postgresql+psycopg://u:***@db/n"),
        ("sqlite:////srv/node/fhirsync.db", "sqlite:////srv/node/fhirsync.db"),
        ("not a url", "not a url"),
    ],
)
def test_redacted_url(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIRSYNC_FEED_PAGE_SIZE", "77")
    assert parse_node_settings({"feed_page_size": 5}).feed_page_size == 77
