"""HTTP service defaults shared by every service: error shape, auth dependency, health and readiness, body limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import AuthError, Principal, PublicKeys, decode_token

log = structlog.get_logger()


class ApiError(Exception):
    """An answer to a client's mistake: rendered as {"error": {"code", "message", "details"}} with a 4xx status."""

    def __init__(self, status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details, headers


def not_found(what: str = "case") -> ApiError:
    # One answer for "does not exist" and "outside your region/unit", so ids cannot be probed.
    return ApiError(404, "not_found", f"{what} not found")


def case_erased() -> ApiError:
    # Text written about an erased case could only be stored in plaintext: it is refused instead (shared.crypto).
    return ApiError(409, "case_erased", "this case's personal data was erased: nothing personal can be written to it")


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _field_problems(exc: RequestValidationError) -> list[dict[str, Any]]:
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        problems.append({"field": ".".join(loc) or "body", "problem": err.get("msg", "invalid"), "type": err.get("type")})
    return problems


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_request",
                 428: "precondition_required"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = _field_problems(exc)
        fields = ", ".join(sorted({p["field"] for p in problems}))
        return JSONResponse(error_body("invalid_request", f"invalid fields: {fields}", problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("request_failed", path=request.url.path, error_type=type(exc).__name__)
        return JSONResponse(error_body("internal_error", "internal error; the request was not completed"), 500)


class BodyLimit:
    """Refuses request bodies over `max_bytes` with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        seen = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        import json

        body = json.dumps(error_body("payload_too_large", f"request body exceeds {self.max_bytes} bytes")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


_bearer = HTTPBearer(auto_error=False)


def authenticator(public_keys: PublicKeys) -> Callable[..., Callable[..., Awaitable[Principal]]]:
    """Returns `require(*roles, setup=False)`, a FastAPI dependency factory: 401 for bad tokens, 403 for a role
    not allowed, 403 `setup_required` for a token of an account that must first change its password or enrol
    its second factor (only identity's setup endpoints pass `setup=True`)."""

    def require(*roles: str, setup: bool = False) -> Callable[..., Awaitable[Principal]]:
        async def dependency(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
            if credentials is None or credentials.scheme.lower() != "bearer":
                raise ApiError(401, "unauthorized", "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
            try:
                principal = decode_token(public_keys, credentials.credentials)
            except AuthError as exc:
                raise ApiError(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc
            if principal.setup and not setup:
                raise ApiError(403, "setup_required", "change your password and enrol your second factor first, "
                               "then refresh the token")
            if roles and principal.role not in roles:
                raise ApiError(403, "forbidden", f"role {principal.role!r} may not use this endpoint")
            structlog.contextvars.bind_contextvars(actor_id=principal.sub, actor_role=principal.role)
            return principal

        dependency.roles = roles  # type: ignore[attr-defined]  # read by the access-control test table
        dependency.setup = setup  # type: ignore[attr-defined]
        return dependency

    return require


async def anyone() -> None:
    """The dependency of an endpoint open to anyone (sign-in, token refresh, public keys)."""


anyone.roles = ()  # type: ignore[attr-defined]  # declared, so the access-control table knows it is public
anyone.public = True  # type: ignore[attr-defined]


ReadinessCheck = Callable[[], Awaitable[None]]


def create_api(
    *,
    title: str,
    description: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    readiness: Iterable[tuple[str, ReadinessCheck]],
    max_body_bytes: int,
    details: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> FastAPI:
    """`details`: what an operator should see on /readyz without it making the service unready (failed outbox
    entries)."""
    app = FastAPI(title=title, description=description, version="1", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    checks = list(readiness)

    @app.middleware("http")
    async def _request_context(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(service=title.removeprefix("waspada-"), method=request.method,
                                               path=request.url.path)
        return await call_next(request)

    @app.get("/healthz", tags=["ops"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Kafka and the database are reachable")
    async def readyz() -> JSONResponse:
        results: dict[str, str] = {}
        for name, check in checks:
            try:
                await check()
                results[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - readiness reports, it does not raise
                results[name] = f"unavailable: {type(exc).__name__}"
        ready = all(v == "ok" for v in results.values())
        body: dict[str, Any] = {"status": "ready" if ready else "not_ready", "checks": results}
        if details is not None:
            try:
                body["details"] = await details()
            except Exception as exc:  # noqa: BLE001 - readiness reports, it does not raise
                body["details"] = {"unavailable": type(exc).__name__}
        return JSONResponse(body, status_code=200 if ready else 503)

    return app
