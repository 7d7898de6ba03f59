"""`python -m services.web.catalogs` (`make web-catalogs`): re-extract the pages' strings into both catalogs,
keeping every translation already made; English entries default to their msgid. Prints what Indonesian lacks."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

from services.web.i18n import LANGUAGES, LOCALES

HERE = Path(__file__).parent


# One catalog per part of the site, each extracted with its own mapping: the reporter's app (messages) and the
# staff pages (staff, under staff/ and templates/staff/). Pages are rendered with both merged.
DOMAINS = {"messages": "babel.cfg", "staff": "babel-staff.cfg"}


def main() -> int:
    return max(update(domain, mapping) for domain, mapping in DOMAINS.items())


def update(domain: str, mapping: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        pot_path = Path(tmp) / f"{domain}.pot"
        subprocess.run([sys.executable, "-m", "babel.messages.frontend", "extract", "-F", mapping, "-k", "N_",
                        "-k", "_", "--no-location", "--sort-output", "--omit-header", "-o", str(pot_path), "."],
                       cwd=HERE, check=True, capture_output=True)
        with pot_path.open("rb") as f:
            template = read_po(f)
    missing = 0
    for lang in LANGUAGES:
        path = LOCALES / lang / "LC_MESSAGES" / f"{domain}.po"
        known: dict[str, str] = {}
        if path.exists():
            with path.open("rb") as f:
                known = {m.id: m.string for m in read_po(f, locale=lang) if m.id and m.string}
        catalog = Catalog(locale=lang, project="waspada-web", fuzzy=False,
                          header_comment=f"# Waspada's pages ({lang}). Msgids are English; `make web-catalogs` updates.")
        for message in template:
            if not message.id:
                continue
            text = known.get(message.id) or (message.id if lang == "en" else "")
            if not text:
                missing += 1
                print(f"{lang} ({domain}): untranslated: {message.id!r}")
            catalog.add(message.id, text)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            write_po(f, catalog, sort_output=True, width=120)
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
