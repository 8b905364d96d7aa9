"""Bearer JWT authentication and scopes for the API.

A token is a JWT in ``Authorization: Bearer <token>``, checked against one key source:

- an HS256 shared secret (``api_jwt_secret``);
- a PEM public key (``api_jwt_public_key_file``): RSA keys verify RS256, EC P-256 keys
  ES256; nothing else is accepted, so a token cannot choose a weaker algorithm (or
  ``none``, or HS256 with the public key as secret);
- a JWKS file (``api_jwt_jwks_file``): the key is chosen by the token's ``kid`` (a file
  of one key needs none); the file is read again when it changes, so keys rotate without
  a restart.

``exp``, ``aud`` and ``iss`` are required and checked (``api_jwt_leeway_s`` of clock
skew). Scopes come from ``scope`` (space separated, OAuth 2) or ``scp`` (a list):
``forecasts:read`` reads forecasts, alerts and events, ``predict`` posts histories. A
missing, malformed, expired, wrongly signed or wrong-audience token is 401
(``WWW-Authenticate: Bearer error="invalid_token"``); a valid token without the scope is
403 (``error="insufficient_scope"``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from streamcast.config import ApiSettings
from streamcast.errors import ConfigurationError

log = logging.getLogger(__name__)

SCOPE_READ: Final = "forecasts:read"
SCOPE_PREDICT: Final = "predict"
#: how often a JWKS file is checked for changes
JWKS_CHECK_S = 5.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's subject (None without auth) and its scopes."""

    subject: str | None
    scopes: frozenset[str]


class AuthError(Exception):
    """A request that cannot be let through: ``status`` 401 or 403, an RFC 6750 code."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        scope: str | None = None,
        *,
        description: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.scope = scope
        #: the challenge's ``error_description`` (default: the detail); a detail that
        #: quotes the token passes a fixed one, the body carries the rest
        self.description = detail if description is None else description

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` header value; its description is made safe for a
        quoted header parameter (:func:`header_text`) whatever it says."""
        text = f'Bearer realm="streamcast", error="{self.code}"'
        text += f', error_description="{header_text(self.description)}"'
        return text + (f', scope="{self.scope}"' if self.scope else "")


#: the longest ``error_description`` (and token text quoted in a detail)
DESCRIPTION_CHARS = 200


def header_text(text: str, limit: int = DESCRIPTION_CHARS) -> str:
    """``text`` as an RFC 6750 ``error_description``: printable ASCII without ``"`` and
    ``\\`` (anything else becomes ``?``, so no CR/LF, no second parameter, no header a
    server cannot encode), at most ``limit`` characters.

    >>> header_text('x", error="forged\\r\\n€')
    "x', error='forged???"
    """
    safe = "".join("'" if c == '"' else c if " " <= c <= "~" and c != "\\" else "?" for c in text)
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


class KeySource(Protocol):
    """Where the verification key of a token comes from."""

    def key_for(self, header: dict[str, Any]) -> tuple[Any, list[str]]:
        """``(key, allowed algorithms)`` for a token with this header; AuthError if none."""
        ...


class SecretKey:
    """One HS256 shared secret."""

    def __init__(self, secret: str) -> None:
        if len(secret) < 32:
            raise ConfigurationError(
                "STREAMCAST_API_JWT_SECRET (api_jwt_secret): use at least 32 characters "
                "(an HS256 key shorter than the hash is guessable)"
            )
        self._secret = secret

    def key_for(self, header: dict[str, Any]) -> tuple[Any, list[str]]:
        """The secret, for HS256 only."""
        return self._secret, ["HS256"]


def _algorithm_of(key: object, source: str) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        return "ES256"
    raise ConfigurationError(f"{source}: only RSA (RS256) and EC P-256 (ES256) keys are supported")


class PemKey:
    """One PEM public key; its type decides the one algorithm accepted."""

    def __init__(self, path: Path) -> None:
        try:
            self._key = load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as err:
            raise ConfigurationError(
                f"STREAMCAST_API_JWT_PUBLIC_KEY_FILE: {path} is not a PEM public key: {err}"
            ) from None
        self._algorithms = [_algorithm_of(self._key, str(path))]

    def key_for(self, header: dict[str, Any]) -> tuple[Any, list[str]]:
        """The key and its algorithm."""
        return self._key, self._algorithms


class JwksFile:
    """Keys from a JWKS file, by ``kid``; re-read when the file's mtime changes."""

    def __init__(self, path: Path, clock: Any = time.monotonic) -> None:
        self._path = path
        self._clock = clock
        self._mtime = -1.0
        self._checked = -JWKS_CHECK_S
        self._keys: dict[str | None, tuple[Any, str]] = {}
        self._load()
        if not self._keys:
            raise ConfigurationError(f"STREAMCAST_API_JWT_JWKS_FILE: {path} holds no usable key")

    def _load(self) -> None:
        try:
            mtime = self._path.stat().st_mtime
            if mtime == self._mtime:
                return
            keyset = jwt.PyJWKSet.from_json(self._path.read_text())
        except (OSError, jwt.PyJWKSetError, ValueError) as err:
            if not self._keys:
                raise ConfigurationError(
                    f"STREAMCAST_API_JWT_JWKS_FILE: {self._path} is not a JWKS file: {err}"
                ) from None
            log.warning(
                "JWKS file unreadable; keeping the keys read before", extra={"error": str(err)}
            )
            return
        keys: dict[str | None, tuple[Any, str]] = {}
        for jwk in keyset.keys:
            try:
                keys[jwk.key_id] = (jwk.key, _algorithm_of(jwk.key, str(self._path)))
            except ConfigurationError:
                continue  # a key of another kind (e.g. an HS key) is not one of ours
        self._keys, self._mtime = keys, mtime
        log.info("JWKS keys loaded", extra={"kids": sorted(str(k) for k in keys)})

    def key_for(self, header: dict[str, Any]) -> tuple[Any, list[str]]:
        """The key named by ``kid`` (the only key when the token names none)."""
        now = self._clock()
        if now - self._checked >= JWKS_CHECK_S:
            self._checked = now
            self._load()
        kid = header.get("kid")
        if kid is None and len(self._keys) == 1:
            key, algorithm = next(iter(self._keys.values()))
            return key, [algorithm]
        if kid not in self._keys:
            raise AuthError(401, "invalid_token", "the token's key id (kid) is not known")
        key, algorithm = self._keys[kid]
        return key, [algorithm]


class Authenticator:
    """Checks bearer tokens (module docstring); ``None`` source: auth is off."""

    def __init__(
        self,
        source: KeySource | None,
        *,
        audience: str | None = None,
        issuer: str | None = None,
        leeway_s: float = 30.0,
    ) -> None:
        self._source = source
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway_s

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> Authenticator:
        """The authenticator the settings describe (reads key files: fails fast)."""
        if settings.api_auth == "off":
            return cls(None)
        source: KeySource
        if settings.api_jwt_secret is not None:
            source = SecretKey(settings.api_jwt_secret.get_secret_value())
        elif settings.api_jwt_public_key_file is not None:
            source = PemKey(settings.api_jwt_public_key_file)
        elif settings.api_jwt_jwks_file is not None:
            source = JwksFile(settings.api_jwt_jwks_file)
        else:  # pragma: no cover - ApiSettings refuses this
            raise ConfigurationError("api_auth=jwt needs a key source")
        return cls(
            source,
            audience=settings.api_jwt_audience,
            issuer=settings.api_jwt_issuer,
            leeway_s=settings.api_jwt_leeway_s,
        )

    @property
    def enabled(self) -> bool:
        """False when auth is off (every request is let through)."""
        return self._source is not None

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a request with this ``Authorization`` header; AuthError (401)."""
        if self._source is None:
            return Principal(None, frozenset({SCOPE_READ, SCOPE_PREDICT}))
        if not authorization:
            raise AuthError(401, "invalid_request", "a bearer token is required")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(401, "invalid_request", "use Authorization: Bearer <token>")
        claims = self._verify(token.strip())
        subject = claims.get("sub")
        return Principal(str(subject) if subject is not None else None, _scopes(claims))

    def _verify(self, token: str) -> dict[str, Any]:
        assert self._source is not None
        try:
            header = jwt.get_unverified_header(token)
            key, algorithms = self._source.key_for(header)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(401, "invalid_token", "the token has expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError(401, "invalid_token", "the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError(401, "invalid_token", "the token has another issuer") from None
        except jwt.MissingRequiredClaimError as err:
            raise AuthError(
                401, "invalid_token", f"the token lacks the {err.claim} claim"
            ) from None
        except jwt.InvalidAlgorithmError:
            raise AuthError(401, "invalid_token", "the token's algorithm is not accepted") from None
        except jwt.InvalidSignatureError:
            raise AuthError(401, "invalid_token", "the token's signature is invalid") from None
        except jwt.PyJWTError as err:
            # PyJWT's text may quote the token (its header's ``crit``, say): only the
            # JSON body carries it, bounded; the challenge says a fixed sentence
            said = str(err)
            if len(said) > DESCRIPTION_CHARS:
                said = said[: DESCRIPTION_CHARS - 3] + "..."
            raise AuthError(
                401, "invalid_token", f"the token is invalid: {said}",
                description="the token is invalid",
            ) from None  # fmt: skip
        return claims


def require(principal: Principal, scope: str) -> None:
    """AuthError (403) unless ``principal`` holds ``scope``."""
    if scope not in principal.scopes:
        raise AuthError(403, "insufficient_scope", f"the token lacks the scope {scope}", scope)


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    scope = claims.get("scope")
    scp = claims.get("scp")
    found: list[str] = []
    if isinstance(scope, str):
        found += scope.split()
    if isinstance(scp, str):
        found += scp.split()
    elif isinstance(scp, list):
        found += [s for s in scp if isinstance(s, str)]
    return frozenset(found)
