"""Normalising identifiers before they are checked, sealed and hashed, so that the same NIK, passport, phone or name
written two ways compares equal — and a look-alike spelling cannot slip past a check or a link.

- Digits: full-width (`３６０３…`), Arabic-Indic and every other Unicode decimal digit become ASCII digits.
- Phones: parsed and validated by `phonenumbers` (Google's libphonenumber metadata), Indonesia the default
  region, written E.164 (`+62812…`).
- Names: NFKC, case-folded, accents dropped, punctuation and honorifics ignored; letters of any script are kept.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

HONORIFICS = {"pak", "bapak", "bu", "ibu", "mas", "mbak", "bang", "abang", "haji", "hj", "h", "kak", "sdr", "sdri"}
_PHONE_CHARS = re.compile(r"[0-9\s+\-().]+")  # letters (vanity numbers) are refused


def ascii_digits(text: str) -> str:
    """`text` after NFKC with every Unicode decimal digit written as its ASCII digit."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)


def normalise_nik(raw: str) -> str:
    """A NIK is exactly 16 digits (in any script's digits, written back in ASCII)."""
    nik = ascii_digits(raw.strip())
    if not re.fullmatch(r"[0-9]{16}", nik):
        raise ValueError("NIK must be exactly 16 digits")
    return nik


def normalise_passport(raw: str) -> str:
    """6 to 12 letters A–Z and digits, upper case (full-width and lower-case letters are folded)."""
    passport = ascii_digits(raw.strip()).upper()
    if not re.fullmatch(r"[A-Z0-9]{6,12}", passport):
        raise ValueError("passport number must be 6 to 12 letters A-Z and digits")
    return passport


def normalise_phone(raw: str, default_region: str = "ID") -> str:
    """A real phone number in E.164: '0812-3456 7890', '62812…', '+62 812…' and '＋６２８１２…' -> '+62812…'."""
    text = ascii_digits(raw.strip())
    if not _PHONE_CHARS.fullmatch(text):
        raise ValueError("phone may hold only digits, spaces, '+', '-', '(', ')' and '.'")
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("phone is not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError("phone is not a valid number (for Indonesia: 08… or +62…; else +<country code>)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_name(name: str) -> str:
    """'Pak  Joko', 'ＪＯＫＯ' and 'jóko' all -> 'joko': width, case, accents, punctuation and honorifics do not
    count; letters of other scripts stay (so two Arabic-script names are still told apart)."""
    text = unicodedata.normalize("NFKC", name).casefold()
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = unicodedata.normalize("NFKC", text)
    words = [w for w in re.sub(r"[\W_]+", " ", text).split() if w not in HONORIFICS]
    return " ".join(words)
