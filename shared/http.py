"""HTTP service defaults shared by every service: error shape and its declaration, auth dependency, health and
readiness, body limit, security headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.datastructures import MutableHeaders
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


def invalid(field: str, problem: str) -> ApiError:
    """422 naming one bad field, in the same shape as pydantic's validation errors."""
    return ApiError(422, "invalid_request", f"invalid fields: {field}", [{"field": field, "problem": problem}])


class ErrorInfo(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. not_found, invalid_request")
    message: str
    details: Any = Field(None, description="for invalid_request: [{field, problem, type}], one per bad field")


class ErrorBody(BaseModel):
    """Every 4xx (and the 500 that must never happen) answers this."""

    error: ErrorInfo


_MEANING = {
    401: "Missing, expired or forged bearer token",
    403: "Your role may not use this endpoint",
    404: "Not found, or outside your region or unit",
    409: "Conflicts with the current state (the body says which)",
    412: "If-Match does not match the current version",
    413: "Request body over the size limit",
    422: "Invalid input: every bad field is named in details",
    428: "If-Match is required",
    429: "Too many failed attempts: wait Retry-After seconds",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the error statuses it can answer, each with the one error model."""
    return {status: {"model": ErrorBody, "description": _MEANING[status]} for status in statuses}


def _field_problems(exc: RequestValidationError) -> list[dict[str, Any]]:
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
            loc = loc[1:]  # where it was sent; the name says which field
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
        if exc.status_code == 400:  # FastAPI could not read the body (not JSON, not UTF-8): a bad field like any other
            return JSONResponse(error_body("invalid_request", "invalid fields: body",
                                           [{"field": "body", "problem": "is not a JSON document"}]), status_code=422)
        code = _STATUS_CODES.get(exc.status_code, "error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("request_failed", path=request.url.path, error_type=type(exc).__name__)
        # Answered by Starlette's outermost middleware, outside SecurityHeaders: the headers are set here.
        return JSONResponse(error_body("internal_error", "internal error; the request was not completed"), 500,
                            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


class BodyLimit:
    """Refuses request bodies over `max_bytes` with 413, whether or not Content-Length is sent.

    A body is read whole (it is at most `max_bytes`) before the app sees it: refusing halfway through would
    surface inside the app as a body it could not parse."""

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
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}],
                                      then=receive), send)

    async def _too_large(self, send: Send) -> None:
        import json

        body = json.dumps(error_body("payload_too_large", f"request body exceeds {self.max_bytes} bytes")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A `receive` that hands out `messages` first, then waits on the real one (for the disconnect)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is None:
            return {"type": "http.disconnect"}
        return await then()

    return receive


class ResponseHeaders:
    """Middleware that sets headers on every HTTP answer (plain ASGI: no task and no queue per request); a subclass
    says which in `edit`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def edit(self, scope: Scope, headers: MutableHeaders) -> None:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers") or [])}
                self.edit(scope, MutableHeaders(scope=message))
            await send(message)

        await self.app(scope, receive, with_headers)


class SecurityHeaders(ResponseHeaders):
    """`X-Content-Type-Options: nosniff` on every answer; `Cache-Control: no-store` on the /v1 API's answers
    (personal data, case data); a route's own Cache-Control or Content-Security-Policy stays as it set it."""

    def edit(self, scope: Scope, headers: MutableHeaders) -> None:
        headers.setdefault("X-Content-Type-Options", "nosniff")
        if scope.get("path", "").startswith("/v1/"):
            headers.setdefault("Cache-Control", "no-store")


class RequestContext:
    """Each request's log context (service, method, path), bound before anything else runs. Plain ASGI rather than
    `@app.middleware("http")`, whose wrapper runs the app in a task of its own and streams its answer through a
    queue: a few per cent of a service's CPU under load (py-spy, `make bench`)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(service=self.service, method=scope.get("method"),
                                                   path=scope.get("path"))
        await self.app(scope, receive, send)


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


def _declared_errors_only(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with FastAPI's default 422 (a shape this API never answers) replaced by ErrorBody."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        default = {"$ref": "#/components/schemas/HTTPValidationError"}
        for operation in (op for path in schema.get("paths", {}).values() for op in path.values()):
            invalid_input = operation.get("responses", {}).get("422")
            if invalid_input and invalid_input.get("content", {}).get("application/json", {}).get("schema") == default:
                operation["responses"]["422"] = {"description": _MEANING[422], "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        components.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
                              | {"title": "ErrorBody"})
        app.openapi_schema = schema
    return app.openapi_schema


async def anyone() -> None:
    """The dependency of an endpoint open to anyone (sign-in, token refresh, public keys)."""


anyone.roles = ()  # type: ignore[attr-defined]  # declared, so the access-control table knows it is public
anyone.public = True  # type: ignore[attr-defined]


ReadinessCheck = Callable[[], Awaitable[None]]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str] = Field(description="each check: ok, or unavailable: <reason>")


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
    app.add_middleware(SecurityHeaders)  # added last: outermost, so a 413 from BodyLimit carries them too
    checks = list(readiness)
    app.openapi = lambda: _declared_errors_only(app)  # type: ignore[method-assign]

    app.add_middleware(RequestContext, service=title.removeprefix("waspada-"))  # outermost: logs of all the rest

    @app.get("/healthz", tags=["ops"], summary="The process is up", response_model=Health)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Kafka and the database are reachable", response_model=Readiness,
             responses={503: {"model": Readiness, "description": "Something this service needs is unreachable"}})
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
