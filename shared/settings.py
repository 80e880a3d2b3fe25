"""Configuration, read once per process from the environment, `.env` and OpenFaaS secret files."""

from functools import cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

OPENFAAS_SECRETS_DIR = Path("/var/openfaas/secrets")


def _setting(env_name: str, secret_name: str | None = None) -> AliasChoices:
    """Name a setting by its environment variable and, for secrets, its OpenFaaS secret file."""
    return AliasChoices(env_name, secret_name) if secret_name else AliasChoices(env_name)


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
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"], validation_alias=_setting("CORS_ORIGINS")
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, validation_alias=_setting("MAX_BODY_BYTES"))
    log_level: str = Field("INFO", validation_alias=_setting("LOG_LEVEL"))

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value


@cache
def get_settings() -> Settings:
    """The process-wide settings; OpenFaaS secret files are read when their folder exists."""
    secrets_dir = OPENFAAS_SECRETS_DIR if OPENFAAS_SECRETS_DIR.is_dir() else None
    return Settings(_secrets_dir=secrets_dir)
