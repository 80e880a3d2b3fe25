"""Configuration, read once per process from the environment, `.env` and OpenFaaS secret files."""

import tempfile
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

OPENFAAS_SECRETS_DIR = Path("/var/openfaas/secrets")
QueueKind = Literal["local", "cloudevents", "openfaas", "sqs"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _setting(env_name: str, secret_name: str | None = None) -> AliasChoices:
    """Name a setting by its environment variable and, for secrets, its OpenFaaS secret file."""
    return AliasChoices(env_name, secret_name) if secret_name else AliasChoices(env_name)


class ModelPrice(BaseModel):
    """USD per million tokens."""

    input_cache_hit: float = Field(ge=0)
    input_cache_miss: float = Field(ge=0)
    output: float = Field(ge=0)


def _price(cache_hit: float, cache_miss: float, output: float) -> ModelPrice:
    return ModelPrice(input_cache_hit=cache_hit, input_cache_miss=cache_miss, output=output)


# DeepSeek's peak-hour list prices (off-peak is half); set DEEPSEEK_PRICES to follow changes.
DEFAULT_PRICES = {
    "deepseek-flash": _price(0.006, 0.30, 1.20),
    "deepseek-v4-flash": _price(0.006, 0.30, 1.20),
    "deepseek-chat": _price(0.006, 0.30, 1.20),
    "deepseek-reasoner": _price(0.006, 0.30, 1.20),
    "deepseek-v4-pro": _price(0.044, 1.32, 3.96),
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    mongodb_uri: str = Field(
        "mongodb://127.0.0.1:27017", validation_alias=_setting("MONGODB_URI", "mongodb-uri")
    )
    mongodb_db: str = Field("better_assistant", validation_alias=_setting("MONGODB_DB"))
    # Short, so an unreachable database becomes a 503 in seconds instead of a hung request.
    mongodb_timeout_ms: int = Field(
        3000, ge=100, le=60000, validation_alias=_setting("MONGODB_TIMEOUT_MS")
    )
    # The frontend's origins; none by default, so no browser page may call a deployment until
    # its origins are named (`make dev` allows any).
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_setting("CORS_ORIGINS")
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, validation_alias=_setting("MAX_BODY_BYTES"))
    log_level: LogLevel = Field("INFO", validation_alias=_setting("LOG_LEVEL"))

    # The seed README called the key API_KEY; both names work.
    deepseek_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("DEEPSEEK_API_KEY", "API_KEY", "deepseek-api-key")
    )
    deepseek_base_url: str = Field(
        "https://api.deepseek.com", validation_alias=_setting("DEEPSEEK_BASE_URL")
    )
    deepseek_model: str = Field("deepseek-v4-flash", validation_alias=_setting("DEEPSEEK_MODEL"))
    deepseek_connect_timeout_s: float = Field(
        10, gt=0, validation_alias=_setting("DEEPSEEK_CONNECT_TIMEOUT_S")
    )
    # DeepSeek keeps a busy request queued, sending keep-alive comments, for minutes.
    deepseek_first_token_timeout_s: float = Field(
        600, gt=0, validation_alias=_setting("DEEPSEEK_FIRST_TOKEN_TIMEOUT_S")
    )
    deepseek_idle_timeout_s: float = Field(
        60, gt=0, validation_alias=_setting("DEEPSEEK_IDLE_TIMEOUT_S")
    )
    deepseek_max_retries: int = Field(
        2, ge=0, le=10, validation_alias=_setting("DEEPSEEK_MAX_RETRIES")
    )
    deepseek_retry_backoff_s: float = Field(
        0.5, ge=0, le=30, validation_alias=_setting("DEEPSEEK_RETRY_BACKOFF_S")
    )
    deepseek_prices: dict[str, ModelPrice] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES), validation_alias=_setting("DEEPSEEK_PRICES")
    )

    chat_history_max_messages: int = Field(
        20, ge=0, le=500, validation_alias=_setting("CHAT_HISTORY_MAX_MESSAGES")
    )
    # Estimated as characters / 4; keeps long dialogs inside the model's context and budget.
    chat_history_max_tokens: int = Field(
        8000, ge=0, validation_alias=_setting("CHAT_HISTORY_MAX_TOKENS")
    )
    # SSE comments while DeepSeek has not sent a first token, so no proxy cuts an idle stream.
    stream_keepalive_s: float = Field(15, gt=0, validation_alias=_setting("STREAM_KEEPALIVE_S"))

    # Where finished chat turns go to be written to the history. Unset: `cloudevents` when Knative
    # injected K_SINK, else `local` (an in-process queue, so `make dev` needs nothing else).
    history_queue: QueueKind | None = Field(None, validation_alias=_setting("HISTORY_QUEUE"))
    # The broker/sink (cloudevents, default K_SINK), gateway base URL (openfaas) or queue URL (sqs).
    history_queue_url: str | None = Field(None, validation_alias=_setting("HISTORY_QUEUE_URL"))
    k_sink: str | None = Field(None, validation_alias=_setting("K_SINK"))
    history_publish_retries: int = Field(
        3, ge=0, le=10, validation_alias=_setting("HISTORY_PUBLISH_RETRIES")
    )
    history_publish_backoff_s: float = Field(
        0.2, ge=0, le=30, validation_alias=_setting("HISTORY_PUBLISH_BACKOFF_S")
    )
    history_publish_timeout_s: float = Field(
        5, gt=0, le=120, validation_alias=_setting("HISTORY_PUBLISH_TIMEOUT_S")
    )
    # An event (turn or cell) that cannot be delivered is retried for as long as the process
    # lives, its backoff doubling up to this.
    event_retry_max_backoff_s: float = Field(
        30, gt=0, le=3600, validation_alias=_setting("EVENT_RETRY_MAX_BACKOFF_S")
    )
    # Where such an event is kept once it has failed this long, and when the process stops
    # first; the next process replays it. Deployments mount a volume here (an emptyDir
    # survives a container restart); `make dev` keeps it in `.data/spool`.
    event_spool_dir: Path = Field(
        Path(tempfile.gettempdir()) / "better-assistant-spool",
        validation_alias=_setting("EVENT_SPOOL_DIR"),
    )
    event_spool_after_s: float = Field(60, gt=0, validation_alias=_setting("EVENT_SPOOL_AFTER_S"))

    # Signs every queue event (HMAC-SHA256), so the queue-triggered functions take only ours.
    # Several, comma-separated, rotate it: the first signs, any of them verifies.
    event_signing_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, validation_alias=_setting("EVENT_SIGNING_KEY", "event-signing-key")
    )

    # Operators' keys: they may do everything. Several, comma-separated, rotate them.
    admin_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, validation_alias=_setting("ADMIN_API_KEY", "admin-api-key")
    )
    # The OpenID Connect provider that signs the frontend's users in; unset: no user tokens.
    oidc_issuer: str | None = Field(None, validation_alias=_setting("OIDC_ISSUER"))
    oidc_audience: str | None = Field(None, validation_alias=_setting("OIDC_AUDIENCE"))
    # Unset: discovered from the issuer's /.well-known/openid-configuration.
    oidc_jwks_url: str | None = Field(None, validation_alias=_setting("OIDC_JWKS_URL"))
    # Users (their token's `sub`) who may create projects; empty: any signed-in user.
    project_creators: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_setting("PROJECT_CREATORS")
    )

    # Where evaluation cells go to be run by `evaluation-worker`; chosen like the history queue.
    evaluation_queue: QueueKind | None = Field(None, validation_alias=_setting("EVALUATION_QUEUE"))
    evaluation_queue_url: str | None = Field(
        None, validation_alias=_setting("EVALUATION_QUEUE_URL")
    )
    # DeepSeek caps concurrent requests per account: no evaluation run may ask for more.
    evaluation_max_concurrency: int = Field(
        16, ge=1, le=256, validation_alias=_setting("EVALUATION_MAX_CONCURRENCY")
    )
    # A cell handed out but not finished within this is handed out again (its worker died).
    evaluation_cell_lease_s: float = Field(
        900, gt=0, validation_alias=_setting("EVALUATION_CELL_LEASE_S")
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("deepseek_api_key", mode="before")
    @classmethod
    def _blank_key_is_no_key(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "cors_origins", "event_signing_keys", "admin_api_keys", "project_creators", mode="before"
    )
    @classmethod
    def _split_on_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @model_validator(mode="after")
    def _queues_from_knative(self) -> "Settings":
        for name in ("history", "evaluation"):
            kind_field, url_field = f"{name}_queue", f"{name}_queue_url"
            if getattr(self, kind_field) is None:
                setattr(self, kind_field, "cloudevents" if self.k_sink else "local")
            if getattr(self, kind_field) == "cloudevents" and not getattr(self, url_field):
                setattr(self, url_field, self.k_sink)
        return self


@cache
def get_settings() -> Settings:
    """The process-wide settings; OpenFaaS secret files are read when their folder exists."""
    secrets_dir = OPENFAAS_SECRETS_DIR if OPENFAAS_SECRETS_DIR.is_dir() else None
    return Settings(_secrets_dir=secrets_dir)
