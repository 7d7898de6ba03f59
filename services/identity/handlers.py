"""Identity's HTTP routes: parse, call the directory, answer. Identity has no Kafka subscribers: it only produces."""

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse

from services.identity import domain, schemas
from services.identity.accounts import Conflict, Directory, InvalidCredentials, Locked, NotFound
from services.identity.store import UsernameTaken
from shared.api_models import MAX_LIMIT, decode_cursor, page
from shared.auth import ROLES, Principal, jwk
from shared.http import ApiError, anyone, error_body, not_found
from shared.service import Runtime

GENERIC = "the username, password or code is not right"


def install_errors(app: FastAPI) -> None:
    @app.exception_handler(InvalidCredentials)
    async def _invalid(_: Request, __: InvalidCredentials) -> JSONResponse:
        return JSONResponse(error_body("invalid_credentials", GENERIC), status_code=401)

    @app.exception_handler(Locked)
    async def _locked(_: Request, exc: Locked) -> JSONResponse:
        return JSONResponse(error_body("locked", "too many failed attempts; try again later",
                                       {"retry_after_s": math.ceil(exc.retry_after_s)}),
                            status_code=429, headers={"Retry-After": str(math.ceil(exc.retry_after_s))})

    @app.exception_handler(domain.FieldProblem)
    async def _problem(_: Request, exc: domain.FieldProblem) -> JSONResponse:
        return JSONResponse(error_body("invalid_request", str(exc), exc.problems), status_code=422)

    @app.exception_handler(domain.NotAllowed)
    async def _not_allowed(_: Request, exc: domain.NotAllowed) -> JSONResponse:
        return JSONResponse(error_body("forbidden", str(exc)), status_code=403)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, __: NotFound) -> JSONResponse:
        error = not_found("account")
        return JSONResponse(error_body(error.code, error.message), status_code=404)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse(error_body("conflict", str(exc)), status_code=409)

    @app.exception_handler(UsernameTaken)
    async def _taken(_: Request, __: UsernameTaken) -> JSONResponse:
        return JSONResponse(error_body("username_taken", "this username is taken",
                                       [{"field": "username", "problem": "taken"}]), status_code=409)


def routes(runtime: Runtime, directory: Directory, public_keys: dict[str, Any]) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["identity"])
    signed_in = runtime.require(*ROLES, setup=True)  # also a token that serves only the account's own setup
    admin = runtime.require("admin")

    @router.post("/login", response_model=schemas.TokensOut, dependencies=[Depends(anyone)],
                 summary="Sign in: a 15-minute access token and a refresh token; 401 for any wrong part")
    async def login(body: schemas.LoginIn) -> dict[str, Any]:
        return (await directory.sign_in(body.username, body.password, body.totp)).body()

    @router.post("/token/refresh", response_model=schemas.TokensOut, dependencies=[Depends(anyone)],
                 summary="A new token pair; the refresh token rotates, and a used one ends the whole session")
    async def refresh(body: schemas.RefreshIn) -> dict[str, Any]:
        return (await directory.refresh(body.refresh_token)).body()

    @router.post("/logout", status_code=204, summary="End this session")
    async def logout(principal: Annotated[Principal, Depends(signed_in)]) -> Response:
        await directory.sign_out(principal)
        return Response(status_code=204)

    @router.get("/me", response_model=schemas.MeOut, summary="Your account")
    async def me(principal: Annotated[Principal, Depends(signed_in)]) -> dict[str, Any]:
        return domain.me_view(await directory.account_of(principal))

    @router.post("/password", status_code=204, summary="Change your password (at least 10 characters)")
    async def change_password(body: schemas.PasswordIn,
                              principal: Annotated[Principal, Depends(signed_in)]) -> Response:
        try:
            await directory.change_password(principal, body.current, body.new)
        except InvalidCredentials:
            raise ApiError(422, "invalid_request", "the current password is not right",
                           [{"field": "current", "problem": "does not match"}]) from None
        return Response(status_code=204)

    @router.post("/totp/enroll", response_model=schemas.OtpauthOut,
                 summary="Start enrolling a second factor (RFC 6238): an otpauth:// URI for an authenticator app")
    async def enroll(principal: Annotated[Principal, Depends(signed_in)]) -> dict[str, Any]:
        return {"otpauth_uri": await directory.enroll_totp(principal)}

    @router.post("/totp/confirm", response_model=schemas.TotpConfirmedOut,
                 summary="Confirm the second factor with a code from the app; then refresh the token")
    async def confirm(body: schemas.TotpConfirmIn,
                      principal: Annotated[Principal, Depends(signed_in)]) -> dict[str, Any]:
        await directory.confirm_totp(principal, body.code)
        return {"totp_enabled": True}

    @router.get("/accounts", response_model=schemas.AccountPage, summary="Accounts in your region")
    async def list_accounts(
        principal: Annotated[Principal, Depends(admin)],
        role: schemas.Role | None = None,
        status: schemas.Status | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    ) -> dict[str, Any]:
        filters = {k: v for k, v in (("role", role), ("status", status)) if v}
        offset = decode_cursor(cursor)
        docs = await directory.store.in_region(principal.region, filters, offset, limit + 1)
        return page([domain.admin_view(d) for d in docs], offset, limit)

    @router.post("/accounts", status_code=201, response_model=schemas.AccountCreatedOut,
                 summary="Create an account in your region; its one-time password is shown this once")
    async def create_account(body: schemas.AccountIn,
                             principal: Annotated[Principal, Depends(admin)]) -> dict[str, Any]:
        account, one_time = await directory.create_account(
            username=body.username, name=body.name, role=body.role, region=body.region, unit=body.unit,
            admin=principal)
        return {**domain.admin_view(account), "one_time_password": one_time}

    @router.get("/accounts/{account_id}", response_model=schemas.AccountOut, summary="One account in your region")
    async def get_account(account_id: str, principal: Annotated[Principal, Depends(admin)]) -> dict[str, Any]:
        return domain.admin_view(await directory.managed(principal, account_id))

    @router.patch("/accounts/{account_id}", response_model=schemas.AccountOut,
                  summary="Change name, role, region or unit, or disable (status) an account in your region")
    async def change_account(account_id: str, body: schemas.AccountPatch,
                             principal: Annotated[Principal, Depends(admin)]) -> dict[str, Any]:
        wanted = body.model_dump(exclude_unset=True)
        if not wanted:
            raise ApiError(422, "invalid_request", "nothing to change", [{"field": "body", "problem": "empty"}])
        if any(wanted.get(f) is None for f in ("name", "role", "region", "status") if f in wanted):
            raise ApiError(422, "invalid_request", "name, role, region and status cannot be null",
                           [{"field": f, "problem": "null"} for f in ("name", "role", "region", "status")
                            if f in wanted and wanted[f] is None])
        return domain.admin_view(await directory.change_account(principal, account_id, wanted))

    @router.post("/accounts/{account_id}/reset", response_model=schemas.OneTimePasswordOut,
                 summary="Issue a one-time password (to be changed at the next sign-in); ends the account's sessions")
    async def reset(account_id: str, principal: Annotated[Principal, Depends(admin)],
                    body: schemas.ResetIn | None = None) -> dict[str, Any]:
        one_time = await directory.reset(principal, account_id, bool(body and body.reset_totp))
        return {"one_time_password": one_time}

    @router.get("/jwks.json", response_model=schemas.JwksOut, dependencies=[Depends(anyone)],
                summary="The public keys that verify access tokens")
    async def jwks() -> dict[str, Any]:
        return {"keys": [jwk(key) for key in public_keys.values()]}

    return router
