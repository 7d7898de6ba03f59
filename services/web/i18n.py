"""Languages (gettext catalogs read with Babel), and dates in the reporter's own time zone (WIB/WITA/WIT)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LANGUAGES = ("id", "en")
DEFAULT_LANGUAGE = "id"
LOCALES = Path(__file__).parent / "locales"

# Indonesia keeps no daylight saving time: each province has one fixed offset (Kemendagri province codes).
_WITA = {"51", "52", "53", "63", "64", "65", "71", "72", "73", "74", "75", "76"}
_WIT = {"81", "82", "91", "92", "93", "94", "95", "96", "97"}


@dataclass(frozen=True)
class Zone:
    name: str  # WIB, WITA, WIT
    tz: timezone

    @property
    def offset(self) -> str:  # "+07:00", what a report's observed_at carries
        minutes = int(self.tz.utcoffset(None).total_seconds() // 60)
        return f"+{minutes // 60:02d}:{minutes % 60:02d}"


def zone_of(region: str | None) -> Zone:
    province = (region or "").split(".")[0]
    if province in _WIT:
        return Zone("WIT", timezone(timedelta(hours=9)))
    if province in _WITA:
        return Zone("WITA", timezone(timedelta(hours=8)))
    return Zone("WIB", timezone(timedelta(hours=7)))


def load_catalogs(directory: Path = LOCALES) -> dict[str, Translations]:
    """Compile each language's .po files (messages.po, then the other parts' catalogs) in memory into one
    translation table, so no compiled .mo file is kept in the repository."""
    out: dict[str, Translations] = {}
    for lang in LANGUAGES:
        folder = directory / lang / "LC_MESSAGES"
        for po in [folder / "messages.po", *sorted(p for p in folder.glob("*.po") if p.name != "messages.po")]:
            with po.open("rb") as f:
                catalog = read_po(f, locale=lang)
            buf = io.BytesIO()
            write_mo(buf, catalog)
            buf.seek(0)
            if lang in out:
                out[lang].merge(Translations(buf))
            else:
                out[lang] = Translations(buf)
    return out


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    """The remembered choice first; Indonesian unless the person chose English."""
    if cookie in LANGUAGES:
        return cookie
    return DEFAULT_LANGUAGE


@dataclass(frozen=True)
class Locale:
    lang: str
    translations: Translations
    zone: Zone

    def gettext(self, message: str) -> str:
        return self.translations.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self.translations.ngettext(singular, plural, n)

    def when(self, value: str | datetime | None) -> str:
        """'30 Nov 2026 10.05 WIB'."""
        if not value:
            return ""
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        local = moment.astimezone(self.zone.tz)
        return f"{format_datetime(local, 'd MMM y HH.mm' if self.lang == 'id' else 'd MMM y HH:mm', locale=self.lang)} " \
               f"{self.zone.name}"

    def day(self, value: str | None) -> str:
        if not value:
            return ""
        return format_date(datetime.fromisoformat(value).date(), "d MMM y", locale=self.lang)
