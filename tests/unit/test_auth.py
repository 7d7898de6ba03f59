import base64
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from shared.auth import AuthError, decode_token, issue_token
from shared.settings import DEV_JWT_SECRET, ServiceSettings

SECRET = "s" * 40
REAL_MASTER = base64.b64encode(b"m" * 32).decode()


def test_a_valid_token_gives_its_principal():
    token = issue_token(SECRET, role="investigator", region="36.03", unit="polresta_tangerang", sub="u1", name="Budi")
    p = decode_token(SECRET, token)
    assert (p.sub, p.name, p.role, p.region, p.unit) == ("u1", "Budi", "investigator", "36.03", "polresta_tangerang")


def _claims(**over):
    now = datetime.now(UTC)
    return {"sub": "u1", "role": "reporter", "region": "36.03.11.2009", "exp": int((now + timedelta(hours=1)).timestamp()),
            **over}


@pytest.mark.parametrize("token", [
    pytest.param(issue_token(SECRET, role="reporter", region="36.03.11.2009", ttl=timedelta(seconds=-5)), id="expired"),
    pytest.param(issue_token("x" * 40, role="reporter", region="36.03.11.2009"), id="wrong-signature"),
    pytest.param(jwt.encode(_claims(), None, algorithm="none"), id="alg-none"),
    pytest.param(jwt.encode(_claims(), SECRET, algorithm="HS512"), id="wrong-algorithm"),
    pytest.param(jwt.encode(_claims(role="god"), SECRET, algorithm="HS256"), id="unknown-role"),
    pytest.param(jwt.encode({k: v for k, v in _claims().items() if k != "region"}, SECRET, algorithm="HS256"),
                 id="no-region"),
    pytest.param(jwt.encode({k: v for k, v in _claims().items() if k != "exp"}, SECRET, algorithm="HS256"),
                 id="no-expiry"),
    pytest.param(jwt.encode(_claims(role="investigator"), SECRET, algorithm="HS256"), id="investigator-without-unit"),
    pytest.param("garbage", id="garbage"),
])
def test_bad_tokens_are_refused(token):
    with pytest.raises(AuthError):
        decode_token(SECRET, token)


def test_the_development_secret_is_refused_outside_dev(monkeypatch):
    monkeypatch.delenv("WASPADA_JWT_SECRET", raising=False)
    with pytest.raises(ValueError, match="development default"):
        ServiceSettings(env="prod")
    assert ServiceSettings(env="dev").jwt_secret.get_secret_value() == DEV_JWT_SECRET
    assert ServiceSettings(env="prod", jwt_secret=SECRET, identifier_key="k" * 40, master_key=REAL_MASTER).env == "prod"


def test_a_short_secret_is_refused():
    with pytest.raises(ValueError, match="at least 32"):
        ServiceSettings(env="prod", jwt_secret="short", identifier_key="k" * 40, master_key=REAL_MASTER)


def test_a_master_key_that_is_not_32_bytes_is_refused():
    with pytest.raises(ValueError, match="32 bytes"):
        ServiceSettings(env="dev", master_key=base64.b64encode(b"short").decode())
