"""Users' access tokens: JWTs from the team's OpenID Connect provider, checked against its JWKS."""

import gc
import importlib
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

from shared.clients import process_client
from shared.errors import ServiceUnavailable, Unauthenticated

if TYPE_CHECKING:
    import jwt

# Asymmetric only: with a JWKS, a symmetric algorithm would let anyone sign with the public key.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
CLOCK_SKEW_S = 10
JWKS_CACHE_S = 300
PROVIDER_TIMEOUT_S = 5


@dataclass(frozen=True)
class VerifiedUser:
    issuer: str
    user_id: str
    name: str | None
    email: str | None


@cache
def _imported(name: str) -> ModuleType:
    """A library only token verification needs (PyJWT, httpx), imported by the first token to
    verify: with its crypto bindings and CLI, each takes 150 ms or more to import, a cold start
    that callers with keys (apps, CI) never need to pay. What it allocated is then frozen like
    the function's own imports (`freeze_imported_objects` in shared/http/routing.py), so full
    garbage collections do not walk it."""
    module = importlib.import_module(name)
    gc.freeze()
    return module


def invalid_token(message: str) -> Unauthenticated:
    error = Unauthenticated(message, code="invalid_credentials")
    error.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return error


def provider_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The identity provider's signing keys cannot be fetched; try again shortly.",
        code="identity_provider_unavailable",
    )


class TokenVerifier:
    """Verifies access tokens of one issuer and audience; the signing keys are cached."""

    def __init__(self, issuer: str, audience: str, jwks_url: str | None) -> None:
        self.issuer = issuer
        self.audience = audience
        self._jwks_url = jwks_url
        self._keys: jwt.PyJWKClient | None = None

    def _signing_keys(self) -> "jwt.PyJWKClient":
        if self._keys is None:
            url = self._jwks_url or self._discover_jwks_url()
            self._keys = _imported("jwt").PyJWKClient(
                url, cache_keys=True, lifespan=JWKS_CACHE_S, timeout=PROVIDER_TIMEOUT_S
            )
        return self._keys

    def _discover_jwks_url(self) -> str:
        url = f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"
        httpx = _imported("httpx")
        try:
            response = httpx.get(url, timeout=PROVIDER_TIMEOUT_S)
            response.raise_for_status()
            return str(response.json()["jwks_uri"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise provider_unavailable() from exc

    def verify(self, token: str) -> VerifiedUser:
        """The user a valid token names; 401 for any token that is not."""
        jwt = _imported("jwt")
        try:
            key = self._signing_keys().get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=CLOCK_SKEW_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise provider_unavailable() from exc
        except jwt.ExpiredSignatureError as exc:
            raise invalid_token("The access token has expired.") from exc
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            raise invalid_token("The access token is not valid.") from exc
        user_id = claims["sub"]
        if not isinstance(user_id, str) or not user_id or "/" in user_id or user_id.isspace():
            raise invalid_token("The access token names no usable subject.")
        return VerifiedUser(
            issuer=self.issuer,
            user_id=user_id,
            name=_text_claim(claims, "name") or _text_claim(claims, "preferred_username"),
            email=_text_claim(claims, "email"),
        )


def _text_claim(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value[:200] if isinstance(value, str) and value else None


def token_verifier(issuer: str, audience: str, jwks_url: str | None) -> TokenVerifier:
    """The process-wide verifier for this provider configuration."""
    return process_client(
        "oidc", (issuer, audience, jwks_url), lambda: TokenVerifier(issuer, audience, jwks_url)
    )
