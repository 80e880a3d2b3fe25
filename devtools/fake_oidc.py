"""A small OpenID Connect issuer on 127.0.0.1 for tests: an RSA key, its discovery document and
JWKS, and access tokens minted with it. It signs nobody in; it only makes the tokens a real
provider would hand the frontend, so the verification path runs exactly as deployed."""

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


class FakeOidcIssuer:
    """Serves `/.well-known/openid-configuration` and `/jwks.json`; `mint` signs tokens."""

    def __init__(self, audience: str = "better-assistant") -> None:
        self.audience = audience
        self.key_id = uuid.uuid4().hex[:8]
        self._private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.jwks_requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks.json"

    def mint(
        self, subject: str, *, expires_in_s: float = 300, audience: str | None = None, **claims: Any
    ) -> str:
        """An access token for `subject`; extra keyword arguments become claims."""
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience or self.audience,
            "iat": now,
            "exp": now + int(expires_in_s),
            **claims,
        }
        return jwt.encode(
            payload, self._private_key, algorithm="RS256", headers={"kid": self.key_id}
        )

    def _documents(self) -> dict[str, dict[str, Any]]:
        public_jwk = json.loads(RSAAlgorithm.to_jwk(self._private_key.public_key()))
        jwks = {"keys": [{**public_jwk, "kid": self.key_id, "use": "sig", "alg": "RS256"}]}
        discovery = {"issuer": self.issuer, "jwks_uri": self.jwks_url}
        return {"/.well-known/openid-configuration": discovery, "/jwks.json": jwks}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                document = issuer._documents().get(self.path)
                if self.path == "/jwks.json":
                    issuer.jwks_requests += 1
                body = json.dumps(document).encode() if document else b"{}"
                self.send_response(200 if document else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def __enter__(self) -> "FakeOidcIssuer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
