"""Normalising identifiers so that the same phone or name written two ways compares equal."""

from __future__ import annotations

import re
import unicodedata

_PHONE_JUNK = re.compile(r"[\s\-().]")
HONORIFICS = {"pak", "bapak", "bu", "ibu", "mas", "mbak", "bang", "abang", "haji", "hj", "h", "kak", "sdr", "sdri"}


def normalise_phone(raw: str) -> str:
    """'0812-3456 7890', '62812…', '+62 812…' -> '+62812…'; other countries keep their '+' code."""
    digits = _PHONE_JUNK.sub("", raw)
    if digits.startswith("+"):
        body = digits[1:]
    elif digits.startswith("0"):
        body = "62" + digits[1:]
    elif digits.startswith("62"):
        body = digits
    else:
        raise ValueError("phone must start with 0, 62 or +<country code>")
    if not body.isdigit() or not 8 <= len(body) <= 15:
        raise ValueError("phone must have 8 to 15 digits")
    if body.startswith("620"):
        raise ValueError("phone has a 0 after the country code 62")
    return "+" + body


def normalise_name(name: str) -> str:
    """'Pak  Joko' and 'joko' both -> 'joko': case, accents, punctuation and honorifics do not count."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().casefold()
    words = [w for w in re.sub(r"[^a-z0-9 ]+", " ", text).split() if w not in HONORIFICS]
    return " ".join(words)
