"""Sealing and key derivation, checked against independent computations."""

import hashlib
import hmac

import pytest

from shared import crypto

MASTER = bytes(range(32))


def test_purpose_keys_are_hkdf_sha256_of_the_master_key():
    # RFC 5869 by hand: extract with an all-zero salt, then one expand block (32 bytes) for info "waspada:<purpose>".
    prk = hmac.new(b"\x00" * 32, MASTER, hashlib.sha256).digest()
    expected = hmac.new(prk, b"waspada:watchlist" + b"\x01", hashlib.sha256).digest()
    assert crypto.derived_key(MASTER, "watchlist") == expected
    assert crypto.derived_key(MASTER, crypto.RECORDS) != expected


def test_a_sealer_seals_with_the_nonce_it_is_given_and_opens_what_it_sealed():
    fixed = crypto.Sealer(MASTER, "case-1", nonce=lambda n: b"\x07" * n)
    sealed = fixed("Siti Aminah")
    assert sealed == fixed("Siti Aminah") and sealed.startswith(crypto.PREFIX) and "Siti" not in sealed
    assert fixed.open(sealed) == "Siti Aminah"
    assert crypto.Sealer(MASTER, "case-2").open(sealed) == crypto.UNREADABLE  # bound to its case
    assert crypto.Sealer(None, "case-1").open(sealed) == crypto.ERASED


def test_an_erased_case_seals_nothing_and_passes_no_text_through():
    erased = crypto.Sealer(None, "case-1")
    assert erased(None) is None
    with pytest.raises(crypto.CaseErased):
        erased("Siti Aminah")
    with pytest.raises(crypto.CaseErased):
        erased.report({"narrative": "Ada calo", "persons": []})
