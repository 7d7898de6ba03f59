import base64
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.auth import AuthError, decode_token, issue_token, jwk, key_id, load_public_keys
from shared.settings import DEV_JWT_PRIVATE_KEY, DEV_JWT_PUBLIC_KEY, ServiceSettings

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
REAL_MASTER = base64.b64encode(b"m" * 32).decode()


def _pem(private_key) -> str:
    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo).decode()


PUBLIC = load_public_keys(_pem(KEY))


def test_a_valid_token_gives_its_principal():
    token = issue_token(KEY, role="investigator", region="36.03", unit="polresta_tangerang", sub="u1", name="Budi",
                        sid="s1")
    p = decode_token(PUBLIC, token)
    assert (p.sub, p.name, p.role, p.region, p.unit, p.sid, p.setup) == (
        "u1", "Budi", "investigator", "36.03", "polresta_tangerang", "s1", False)
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": key_id(KEY.public_key()), "typ": "JWT"}


def _claims(**over):
    now = int(datetime.now(UTC).timestamp())
    return {"sub": "u1", "role": "reporter", "region": "36.03.11.2009", "iat": now, "exp": now + 600, "sid": "s1",
            **over}


def _signed(claims, key=KEY):
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": key_id(key.public_key())})


def _without(name):
    return {k: v for k, v in _claims().items() if k != name}


NOW = int(datetime.now(UTC).timestamp())


@pytest.mark.parametrize("token", [
    pytest.param(issue_token(KEY, role="reporter", region="36.03.11.2009",
                             now=datetime.now(UTC) - timedelta(minutes=16)), id="expired"),
    pytest.param(issue_token(OTHER, role="reporter", region="36.03.11.2009"), id="another-key"),
    pytest.param(jwt.encode(_claims(), KEY, algorithm="EdDSA", headers={"kid": key_id(OTHER.public_key())}),
                 id="kid-of-another-key"),
    pytest.param(jwt.encode(_claims(), KEY, algorithm="EdDSA"), id="no-kid"),
    pytest.param(jwt.encode(_claims(), "waspada-dev-secret-do-not-use-in-production", algorithm="HS256",
                            headers={"kid": key_id(KEY.public_key())}), id="hs256-old-shared-secret"),
    pytest.param(jwt.encode(_claims(), None, algorithm="none"), id="alg-none"),
    pytest.param(_signed(_claims(role="god")), id="unknown-role"),
    pytest.param(_signed(_without("region")), id="no-region"),
    pytest.param(_signed(_without("exp")), id="no-expiry"),
    pytest.param(_signed(_without("iat")), id="no-issued-at"),
    pytest.param(_signed(_without("sid")), id="no-session"),
    pytest.param(_signed(_claims(role="investigator")), id="investigator-without-unit"),
    pytest.param(_signed(_claims(exp=str(NOW + 600))), id="numeric-string-exp"),
    pytest.param(_signed(_claims(iat=str(NOW))), id="numeric-string-iat"),
    pytest.param(_signed(_claims(exp=True)), id="boolean-exp"),
    pytest.param(_signed(_claims(exp=NOW + 901, iat=NOW)), id="lives-longer-than-15-minutes"),
    pytest.param(_signed(_claims(iat=NOW + 3600, exp=NOW + 3900)), id="issued-in-the-future"),
    pytest.param(_signed(_claims(region=36)), id="region-not-a-string"),
    pytest.param(_signed(_claims(region="36.3")), id="region-not-a-kemendagri-code"),
    pytest.param(_signed(_claims(region="36.03.11.2009.1")), id="region-too-deep"),
    pytest.param(_signed(_claims(region=["36"])), id="region-a-list"),
    pytest.param(_signed(_claims(role="investigator", unit=["polresta_tangerang"])), id="unit-a-list"),
    pytest.param(_signed(_claims(role="investigator", unit="no_such_agency")), id="unit-not-an-agency"),
    pytest.param(_signed(_claims(sub=7)), id="sub-not-a-string"),
    pytest.param(_signed(_claims(setup="no")), id="setup-not-a-boolean"),
    pytest.param("garbage", id="garbage"),
])
def test_bad_tokens_are_refused(token):
    with pytest.raises(AuthError):
        decode_token(PUBLIC, token)


def test_a_token_of_exactly_fifteen_minutes_is_accepted():
    now = int(datetime.now(UTC).timestamp())  # not the import-time NOW: a long suite runs this after 15 minutes
    assert decode_token(PUBLIC, _signed(_claims(iat=now, exp=now + 900))).sub == "u1"


def test_a_setup_token_says_so():
    assert decode_token(PUBLIC, issue_token(KEY, role="verifier", region="36.03", setup=True)).setup is True


def test_during_a_rotation_tokens_of_both_keys_are_accepted():
    both = load_public_keys(_pem(KEY) + "\n" + _pem(OTHER))
    for key in (KEY, OTHER):
        assert decode_token(both, issue_token(key, role="reporter", region="36.03.11.2009")).role == "reporter"


def test_a_token_checked_before_is_still_refused_once_expired_or_once_its_key_is_no_longer_trusted(monkeypatch):
    import time

    token = issue_token(OTHER, role="reporter", region="36.03.11.2009", sub="u9")
    both = load_public_keys(_pem(KEY) + "\n" + _pem(OTHER))
    assert decode_token(both, token).sub == "u9"
    assert decode_token(both, token).sub == "u9"  # from what the first check found
    with pytest.raises(AuthError, match="not signed by a key this service trusts"):
        decode_token(load_public_keys(_pem(KEY)), token)  # the rotation is over: OTHER is no longer trusted
    assert decode_token(both, token).sub == "u9"
    later = time.time() + 15 * 60 + 31  # past its expiry and the clock skew allowed
    monkeypatch.setattr(time, "time", lambda: later)

    def as_pyjwt_would_then(*_args, **_kwargs):  # (PyJWT reads the clock through datetime, not time.time)
        raise jwt.ExpiredSignatureError("Signature has expired")

    monkeypatch.setattr(jwt, "decode", as_pyjwt_would_then)
    with pytest.raises(AuthError, match="expired"):  # checked again, not answered from memory
        decode_token(both, token)


def test_the_key_id_is_the_rfc7638_thumbprint():
    # RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
    x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    public = Ed25519PrivateKey.from_private_bytes(
        base64.urlsafe_b64decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")).public_key()
    assert jwk(public)["x"] == x
    assert key_id(public) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_the_development_key_is_refused_outside_dev(monkeypatch):
    monkeypatch.delenv("WASPADA_JWT_PUBLIC_KEY", raising=False)
    with pytest.raises(ValueError, match="development key"):
        ServiceSettings(env="prod", identifier_key="k" * 40, master_key=REAL_MASTER)
    assert ServiceSettings(env="dev").jwt_public_key == DEV_JWT_PUBLIC_KEY
    assert ServiceSettings(env="prod", jwt_public_key=_pem(KEY), identifier_key="k" * 40,
                           master_key=REAL_MASTER).env == "prod"
    with pytest.raises(ValueError, match="development key"):  # not even beside a real key, as during a rotation
        ServiceSettings(env="prod", jwt_public_key=_pem(KEY) + DEV_JWT_PUBLIC_KEY, identifier_key="k" * 40,
                        master_key=REAL_MASTER)


def test_identity_refuses_the_development_private_key_outside_dev():
    from services.identity.app import IdentitySettings

    with pytest.raises(ValueError, match="development key"):
        IdentitySettings(env="prod", jwt_public_key=DEV_JWT_PUBLIC_KEY,
                         identifier_key="k" * 40, master_key=REAL_MASTER)
    with pytest.raises(ValueError, match="development key"):
        IdentitySettings(env="prod", jwt_private_key=DEV_JWT_PRIVATE_KEY, jwt_public_key=_pem(KEY),
                         identifier_key="k" * 40, master_key=REAL_MASTER)


def test_identity_refuses_a_private_key_whose_public_key_is_not_trusted():
    from services.identity.app import IdentitySettings

    private_pem = OTHER.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()).decode()
    with pytest.raises(ValueError, match="does not hold the public key"):
        IdentitySettings(env="prod", jwt_private_key=private_pem, jwt_public_key=_pem(KEY),
                         identifier_key="k" * 40, master_key=REAL_MASTER)
    assert IdentitySettings(env="prod", jwt_private_key=private_pem, jwt_public_key=_pem(KEY) + _pem(OTHER),
                            identifier_key="k" * 40, master_key=REAL_MASTER).env == "prod"


def test_a_public_key_setting_without_a_key_is_refused():
    with pytest.raises(ValueError, match="no PEM public key"):
        ServiceSettings(env="dev", jwt_public_key="not a key")


def test_a_master_key_that_is_not_32_bytes_is_refused():
    with pytest.raises(ValueError, match="32 bytes"):
        ServiceSettings(env="dev", master_key=base64.b64encode(b"short").decode())
