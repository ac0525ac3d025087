"""Node settings and the OpenMRS ``sync2.json`` schema, with errors that name the bad field.

Two files live in a node directory:

- ``sync2.json``: the OpenMRS Sync 2.0 configuration (spec §2), loaded unchanged from Java nodes.
- ``fhirsync.json``: everything OpenMRS keeps elsewhere (database URL, listen address, parent
  credentials, page sizes, retry policy). Any field can be overridden by an environment variable
  ``FHIRSYNC_<FIELD>`` (upper case).
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from fhirsync.errors import ConfigurationError
from fhirsync.records import ORIGIN_MAX

SYNC2_FILE = "sync2.json"
SETTINGS_FILE = "fhirsync.json"
DB_FILE = "fhirsync.db"
_ENV_PREFIX = "FHIRSYNC_"
RECOVERY_FILE = "recover-own-changes"
"""Written by ``fhirsync backup`` into the copy: the first complete pull of a node restored from
it also applies changes that began on the node (they reached the parent after the backup), then
deletes the file."""


def _json_bool(value: object) -> object:
    """A ``sync2.json`` flag as OpenMRS's Jackson reads it: ``true``/``false``, or those words as
    strings. pydantic alone would also take "yes", "on", "1" or 0, which OpenMRS refuses, so a
    typo would silently switch a class on or off."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


_JsonBool = Annotated[bool, BeforeValidator(_json_bool)]


class _Strict(BaseModel):
    """OpenMRS parses strictly: unknown keys are errors (spec §2.1)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ClientOverride(_Strict):
    """A per-transport override for requests to the parent (spec §2.3 ``clients``)."""

    host_address: str | None = Field(None, alias="hostAddress")
    login: str | None = None
    password: SecretStr | None = None


class GeneralConfig(_Strict):
    """The ``general`` section."""

    parent_feed_location: str | None = Field(None, alias="parentFeedLocation")
    local_feed_location: str | None = Field(None, alias="localFeedLocation")
    local_instance_id: str | None = Field(None, alias="localInstanceId")
    persist_success_audit: _JsonBool = Field(False, alias="persistSuccessAudit")
    persist_failure_audit: _JsonBool = Field(False, alias="persistFailureAudit")
    clients: dict[str, ClientOverride] = Field(default_factory=dict)


class ClassConfig(_Strict):
    """One category of a push or pull class list."""

    class_title: str | None = Field(None, alias="classTitle")
    category: str
    open_mrs_class: str | None = Field(None, alias="openMrsClass")
    enabled: _JsonBool = False
    preferred_client: str | None = Field(None, alias="preferredClient")


class SyncMethodConfig(_Strict):
    """The ``push`` or ``pull`` section."""

    enabled: _JsonBool = False
    schedule: int | None = Field(None, ge=1)
    classes: list[ClassConfig] = Field(default_factory=list)

    def enabled_categories(self) -> list[str]:
        """Lower-cased categories of the enabled classes, in listed order."""
        return [c.category.lower() for c in self.classes if c.enabled]

    def class_for(self, category: str) -> ClassConfig | None:
        """The class configuration of ``category`` (case-insensitive), if listed."""
        return next((c for c in self.classes if c.category.lower() == category.lower()), None)


class WhitelistConfig(_Strict):
    """The ``whitelist`` section (absent means disabled, spec §2.3)."""

    enabled: _JsonBool = False
    instance_ids: list[str] = Field(default_factory=list, alias="instanceIds")


class Sync2Config(_Strict):
    """The whole ``sync2.json`` file."""

    general: GeneralConfig = Field(default_factory=GeneralConfig)
    push: SyncMethodConfig = Field(default_factory=SyncMethodConfig)
    pull: SyncMethodConfig = Field(default_factory=SyncMethodConfig)
    whitelist: WhitelistConfig = Field(default_factory=WhitelistConfig)

    def to_json(self) -> str:
        """Pretty JSON (2-space indent, OpenMRS key names), secrets included for the file."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=False)
        for name, override in self.general.clients.items():
            if override.password is not None:
                data["general"]["clients"][name]["password"] = override.password.get_secret_value()
        return json.dumps(data, indent=2) + "\n"


ConflictPolicy = Literal["manual", "parent-wins", "child-wins", "newest-wins"]


class NodeSettings(BaseSettings):
    """The node's own settings (``fhirsync.json``; env ``FHIRSYNC_*`` overrides)."""

    model_config = SettingsConfigDict(env_prefix=_ENV_PREFIX, extra="forbid")

    db_url: str = Field(
        "",
        description="SQLAlchemy URL; empty means SQLite in the node directory. A relative "
        "sqlite:/// path is relative to the node directory.",
    )
    host: str = Field("127.0.0.1", description="Address `fhirsync serve` listens on.")
    port: int = Field(8080, ge=1, le=65535, description="Port `fhirsync serve` listens on.")
    base_url: str = Field(
        "", description="This node's public base URL; empty means http://host:port."
    )
    trusted_proxies: list[str] = Field(
        ["127.0.0.1", "::1"],
        description="Client IPs or CIDR networks (a reverse proxy in front of this node) whose "
        "X-Forwarded-Proto and X-Forwarded-Host headers shape the feed's links; those headers "
        'from any other client are ignored. `[]` trusts none, `["0.0.0.0/0", "::/0"]` every '
        "client.",
    )
    parent_user: str = Field("", description="User name this node presents to its parent.")
    parent_password: SecretStr = Field(SecretStr(""), description="Password for the parent.")
    parent_ca_file: str = Field(
        "",
        description="PEM file of the certificate authorities to trust for an https parent (a "
        "hospital's own CA, or the parent's self-signed certificate), relative to the node "
        "directory or absolute; empty means the usual public CAs.",
    )
    feed_page_size: int = Field(1000, ge=1, le=10000, description="Atom entries per feed page.")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body accepted, in bytes."
    )
    search_max_count: int = Field(1000, ge=1, description="Largest `_count` a FHIR search honours.")
    fetch_batch_size: int = Field(500, ge=1, le=1000, description="Records fetched per request.")
    pull_validation_workers: int = Field(
        1,
        ge=0,
        le=64,
        description="Processes validating pulled FHIR records (1 = in the pull process itself, "
        "0 = one per CPU). Every pulled record is validated either way.",
    )
    http_connect_timeout: float = Field(15.0, gt=0, description="Seconds to connect to a remote.")
    http_read_timeout: float = Field(30.0, gt=0, description="Seconds to wait for a response.")
    preferred_client: str = Field(
        "fhir", description="Transport used when a class names no preferredClient."
    )
    location_filter: str = Field(
        "*%*%*%*%*", description="Pull-side location filter (spec §3.6 atomfeed.filter.location)."
    )
    retry_base_delay: float = Field(1.0, gt=0, description="First retry delay, seconds.")
    retry_factor: float = Field(2.0, ge=1, description="Backoff multiplier between retries.")
    retry_max_delay: float = Field(300.0, gt=0, description="Cap of the backoff delay, seconds.")
    record_max_attempts: int = Field(
        3, ge=1, description="Tries of one failing record before it is parked."
    )
    continue_on_failure: bool = Field(
        True, description="Move the feed on past a parked record (continueOnFailure)."
    )
    conflict_policies: dict[str, ConflictPolicy] = Field(
        {},
        description="Per category: how a record both sides changed in the same field is decided: "
        '"manual" (default for unlisted categories; keep both until a person resolves it), '
        '"parent-wins", "child-wins" or "newest-wins" (by meta.lastUpdated; parent wins when a '
        "side has no time, the times are equal, or the parent's time is over 5 minutes ahead of "
        "this node's clock). Fields changed on one side only are merged whatever the policy.",
    )
    audit_retention_days: int = Field(90, ge=1, description="Days audit rows are kept.")
    audit_keep_payloads: bool = Field(
        False,
        description="Not supported: only `false` is accepted. Audit rows never hold record "
        "bodies (patient data); they name the record and the error.",
    )
    log_level: str = Field("INFO", description="Python logging level.")
    session_secret: SecretStr = Field(
        SecretStr(""),
        description="Key signing admin-page sessions; empty means a random key kept in "
        "NODE_DIR/.session-key (set it when several processes serve one node).",
    )
    session_hours: float = Field(12.0, gt=0, description="Hours an admin-page login lasts.")
    child_offline_after_minutes: int = Field(
        60, ge=1, description="Minutes without contact after which a child is flagged offline."
    )
    manual_pull_enabled: bool = Field(
        True, description='Allow "Pull now" in the admin pages (sync2.enableManualPullFromParent).'
    )
    manual_push_enabled: bool = Field(
        True, description='Allow "Push now" in the admin pages (sync2.enableManualPushToParent).'
    )

    @field_validator("db_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value:
            return value
        # Parsed as the engine will parse it: a URL that passes here otherwise failed only when
        # the database was opened, as a traceback (a driver that is not installed, a bad port).
        # Imported here: SQLAlchemy costs start-up time, and a default SQLite node has no URL.
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        supported = "must be a sqlite:/// or postgresql+psycopg:// URL"
        try:
            url = make_url(value)
        except ValueError as exc:  # int() of the port
            raise ValueError(f"{supported}: its port is not a number") from exc
        except ArgumentError as exc:
            raise ValueError(supported) from exc
        driver = url.drivername.partition("+")[2]
        if url.get_backend_name() == "sqlite" and driver in ("", "pysqlite"):
            return value
        if url.get_backend_name() == "postgresql" and driver in ("", "psycopg"):
            return value
        if url.get_backend_name() in ("sqlite", "postgresql"):
            raise ValueError(f"{supported}: the {driver} driver is not supported")
        raise ValueError(supported)

    @field_validator("audit_keep_payloads")
    @classmethod
    def _no_payloads(cls, value: bool) -> bool:
        # Accepted and ignored, it let an administrator believe record bodies were kept.
        if value:
            raise ValueError(
                "not supported: audit rows never hold record bodies (patient data), only the "
                "record's id and the error; remove the setting or set it to false"
            )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _ip_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry)
            except ValueError as exc:
                raise ValueError(f"{exc}: expected an IP address or a CIDR network") from exc
        return value

    def trusts_proxy(self, client_host: str | None) -> bool:
        """True when ``client_host`` (the address a request came from) is a trusted proxy."""
        try:
            address = ipaddress.ip_address(client_host or "")
        except ValueError:  # no client, or a name (an ASGI test client says "testclient")
            return False
        # A dual-stack listener reports an IPv4 client as ::ffff:a.b.c.d; match it as IPv4 too.
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        networks = [ipaddress.ip_network(entry) for entry in self.trusted_proxies]
        return any(a in n for a in (address, mapped) if a is not None for n in networks)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment variables win over the file, which wins over defaults."""
        return (env_settings, init_settings)


class NodeConfig(BaseModel):
    """Everything a node needs to run: its directory, its settings and its sync2.json."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    node_dir: Path
    settings: NodeSettings
    sync2: Sync2Config

    @property
    def instance_id(self) -> str:
        """``general.localInstanceId``; a ConfigurationError if it is blank (spec §2.4)."""
        value = self.sync2.general.local_instance_id
        if not value or not value.strip():
            raise ConfigurationError(
                "localInstanceId is not set", field="general.localInstanceId", source=SYNC2_FILE
            )
        return value

    @property
    def db_url(self) -> str:
        """The database URL, defaulting to SQLite in the node directory. A relative SQLite path
        is relative to the node directory (as ``parent_ca_file``), not to wherever the command
        runs: from elsewhere it named another, missing file."""
        if not self.settings.db_url:
            return f"sqlite:///{(self.node_dir / DB_FILE).resolve()}"
        return _sqlite_in(self.settings.db_url, self.node_dir)

    @property
    def parent_auth(self) -> tuple[str, str] | None:
        """The node's credentials for its parent, None when no user is configured."""
        user = self.settings.parent_user
        return (user, self.settings.parent_password.get_secret_value()) if user else None

    @property
    def recovery_file(self) -> Path:
        """:data:`RECOVERY_FILE` in the node directory (present until a restored node's first
        complete pull)."""
        return self.node_dir / RECOVERY_FILE

    @property
    def parent_ca_path(self) -> Path | None:
        """``parent_ca_file`` as a path (None when unset); ConfigurationError if it is missing."""
        if not self.settings.parent_ca_file.strip():
            return None
        path = (self.node_dir / self.settings.parent_ca_file.strip()).resolve()
        if not path.is_file():
            raise ConfigurationError(
                f"parent_ca_file: {path} is not a file", field="parent_ca_file"
            )
        return path

    @property
    def base_url(self) -> str:
        """The URL other nodes use to reach this one (no trailing slash)."""
        url = self.settings.base_url or f"http://{self.settings.host}:{self.settings.port}"
        return url.rstrip("/")

    @property
    def parent_url(self) -> str | None:
        """``general.parentFeedLocation`` without surrounding spaces or a trailing slash (as
        typed into the file or the admin page), or None when blank."""
        value = (self.sync2.general.parent_feed_location or "").strip().rstrip("/")
        return value or None


SYNC2_LOCAL_FEED_DEFAULTS = ("http://localhost:8080/openmrs", "defaultAddress")
"""``localFeedLocation`` of Sync 2.0's default file and of its samples."""


def unused_settings(config: NodeConfig) -> list[str]:
    """Warnings about settings this node accepts but does not use (for ``fhirsync status``,
    and ``serve``'s log at start); empty when there are none to mention.

    ``general.localFeedLocation`` is where an OpenMRS node reaches itself over HTTP to read its
    own feed and records. fhirsync reads its store directly, and its address for other nodes
    is ``base_url``: the Sync 2.0 default, and the address ``init`` writes, go unmentioned.
    """
    local = (config.sync2.general.local_feed_location or "").strip().rstrip("/")
    if not local or local in SYNC2_LOCAL_FEED_DEFAULTS or local == config.base_url:
        return []
    return [
        f"{SYNC2_FILE} general.localFeedLocation {local!r} is not used: fhirsync reads its own "
        f"store directly, and other nodes reach it at base_url in {SETTINGS_FILE} (now "
        f"{config.base_url})"
    ]


def _field_path(loc: tuple[int | str, ...]) -> str:
    """``pull.classes[3].enabled``: list positions as an administrator reads them in JSON."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def _error_from_validation(exc: ValidationError, source: str) -> ConfigurationError:
    first = exc.errors()[0]
    where = _field_path(first["loc"]) or "(top level)"
    shown = _shown_input(where, first.get("input"))
    return ConfigurationError(
        f"{source}: field '{where}': {first['msg']}{shown}", field=where, source=source
    )


def _shown_input(where: str, value: Any) -> str:
    """The rejected value for an error message: never a secret, nor a password in a URL."""
    if isinstance(value, dict | list) or any(w in where.lower() for w in ("password", "secret")):
        return ""
    return f" (got {redacted_url(value) if isinstance(value, str) else value!r})"


def redacted_url(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***`` (for messages and output);
    any other string unchanged."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"


def read_json_file(path: Path) -> Any:
    """The JSON in ``path``; ConfigurationError (naming the file, and the line of a syntax error)
    if it is missing, unreadable or not JSON. A UTF-8 byte order mark is allowed: Windows Notepad
    writes one, and OpenMRS reads such a file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise ConfigurationError(f"{path}: file not found", source=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"{path}: not UTF-8 text (byte {exc.start + 1}): save it as UTF-8", source=str(path)
        ) from exc
    except OSError as exc:
        raise ConfigurationError(
            f"{path}: cannot be read: {exc.strerror or exc}", source=str(path)
        ) from exc
    return parse_json_text(text, str(path))


def parse_json_text(text: str, source: str) -> Any:
    """Parse JSON, turning a syntax error into a ConfigurationError with line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            field=f"line {exc.lineno}",
            source=source,
        ) from exc


def parent_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as the parent's base URL (for a message), None if nothing.

    Checked where it is set (``sync2.json``, ``init --parent``, ``move-parent``): a URL that
    cannot be parsed, or whose port no server can have, otherwise failed later as a traceback
    or as "parent unreachable".
    """
    shown = redacted_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number from 0 to 65535
    except ValueError as exc:
        return f"the parent's URL {shown!r} is not a valid URL: {exc}"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return (
            f"the parent's URL must start with http:// or https:// and name a host (got {shown!r})"
        )
    return None


def parse_sync2(data: Any, source: str = SYNC2_FILE) -> Sync2Config:
    """Validate parsed ``sync2.json`` data; ConfigurationError names the field."""
    try:
        config = Sync2Config.model_validate(data)
    except ValidationError as exc:
        raise _error_from_validation(exc, source) from exc
    for name, method in (("push", config.push), ("pull", config.pull)):
        if method.enabled and method.schedule is None:
            raise ConfigurationError(
                f"{source}: field '{name}.schedule' is required when {name}.enabled is true",
                field=f"{name}.schedule",
                source=source,
            )
    parent = (config.general.parent_feed_location or "").strip()
    problem = parent_url_problem(parent) if parent else None
    if problem:
        raise ConfigurationError(
            f"{source}: field 'general.parentFeedLocation': {problem}",
            field="general.parentFeedLocation",
            source=source,
        )
    # Both become the origin of records (a Java parent's feed names none: its URL does), kept
    # in ORIGIN_MAX characters: PostgreSQL refused every such write, SQLite stored it.
    for field, value in (
        ("general.parentFeedLocation", parent),
        ("general.localInstanceId", config.general.local_instance_id or ""),
    ):
        if len(value) > ORIGIN_MAX or "\x00" in value:
            raise ConfigurationError(
                f"{source}: field {field!r}: at most {ORIGIN_MAX} characters, without NUL "
                f"(got {len(value)} characters)",
                field=field,
                source=source,
            )
    return config


def load_sync2(path: Path) -> Sync2Config:
    """Load and validate a ``sync2.json`` file."""
    return parse_sync2(read_json_file(path), str(path))


def parse_node_settings(data: Any, source: str = SETTINGS_FILE) -> NodeSettings:
    """Validate node settings data (environment overrides applied); names the bad field."""
    if not isinstance(data, dict):
        raise ConfigurationError(f"{source}: must be a JSON object", source=source)
    overridden = _overridden_by_environment()
    try:
        return NodeSettings(**data)
    except SettingsError as exc:
        # A list or dict setting whose variable is not JSON: pydantic-settings names the field
        # only in its message ('error parsing value for field "trusted_proxies" ...').
        name = next((n for n in overridden if f'"{n}"' in str(exc)), None)
        if name is None:
            raise ConfigurationError(f"environment variables FHIRSYNC_*: {exc}") from exc
        variable = f"environment variable {_ENV_PREFIX}{name.upper()}"
        raise ConfigurationError(
            f'{variable}: must be JSON, a list (["..."]) or an object ({{"...": ...}})',
            field=name,
            source=variable,
        ) from exc
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else ""
        if field in overridden:  # the value to fix is the variable's, not the file's
            source = f"environment variable {_ENV_PREFIX}{field.upper()}"
        raise _error_from_validation(exc, source) from exc


def _overridden_by_environment() -> set[str]:
    """The settings an ``FHIRSYNC_*`` environment variable sets (names compared case-blind, as
    pydantic-settings does)."""
    given = {key.upper() for key in os.environ}
    return {name for name in NodeSettings.model_fields if _ENV_PREFIX + name.upper() in given}


def load_node(node_dir: Path) -> NodeConfig:
    """Load a node directory's two files; ConfigurationError (exit code 2) if either is bad."""
    if not node_dir.is_dir():
        raise ConfigurationError(f"{node_dir}: not a node directory (run `fhirsync init`)")
    settings = parse_node_settings(
        read_json_file(node_dir / SETTINGS_FILE), str(node_dir / SETTINGS_FILE)
    )
    sync2 = load_sync2(node_dir / SYNC2_FILE)
    return NodeConfig(node_dir=node_dir, settings=settings, sync2=sync2)


def write_node_settings(node_dir: Path, settings: NodeSettings) -> None:
    """Write ``fhirsync.json`` with the values that differ from the defaults (secrets included)."""
    data = settings.model_dump(mode="json", exclude_defaults=True)
    for name in NodeSettings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and value.get_secret_value():
            data[name] = value.get_secret_value()
    path = node_dir / SETTINGS_FILE
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.chmod(path, 0o600)


def write_sync2(node_dir: Path, config: Sync2Config) -> None:
    """Write ``sync2.json`` pretty-printed, as OpenMRS does."""
    path = node_dir / SYNC2_FILE
    path.write_text(config.to_json(), encoding="utf-8")
    os.chmod(path, 0o600)


def _sqlite_in(url: str, node_dir: Path) -> str:
    """``url`` with a relative SQLite path made absolute under ``node_dir``; others unchanged."""
    # Imported here, as in the db_url check: SQLAlchemy costs start-up time.
    from sqlalchemy.engine import make_url

    parsed = make_url(url)  # the field's check parsed it already
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if not path or path == ":memory:" or path.startswith("file:") or Path(path).is_absolute():
        return url
    absolute = str((node_dir / path).resolve())
    return parsed.set(database=absolute).render_as_string(hide_password=False)
