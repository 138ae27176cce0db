"""Catalog upkeep for developers (`make i18n`): extract, update and compile with Babel.

    python -m cloudshare_p2p.i18n_tools extract   # locale/messages.pot and locale/click.pot
    python -m cloudshare_p2p.i18n_tools update    # + merge into every locale/LANG/.../cloudshare.po
    python -m cloudshare_p2p.i18n_tools compile   # .po -> .mo (shipped as package data)

The same extraction as `pybabel extract -F pyproject.toml -k N_ -o messages.pot cloudshare_p2p`
(the mapping lives in pyproject's `[[tool.babel.mappings]]`). click has no catalogs of its own:
its msgids are extracted from the installed (pinned) click into `locale/click.pot` and merged into
`messages.pot`, so `--help`, "Usage:" and usage errors are translated too. After a click upgrade,
run `make i18n` again and translate what changed (tests/test_i18n.py fails until then).

Babel is a test/dev dependency only: nothing at run time imports this module.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

from .i18n import DOMAIN, LOCALE_DIR

PACKAGE_DIR = Path(__file__).resolve().parent
POT = LOCALE_DIR / "messages.pot"
CLICK_POT = LOCALE_DIR / "click.pot"
PROJECT = "cloudshare-p2p"
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None}
SKIP = ("i18n_tools.py",)


def _extract(folder: Path, prefix: str) -> Catalog:
    catalog = Catalog(project=PROJECT, charset="utf-8", fuzzy=False)
    for filename, lineno, message, comments, context in extract_from_dir(
            str(folder), method_map=[("**.py", "python")], keywords=KEYWORDS,
            comment_tags=("TRANSLATORS:",), strip_comment_tags=True):
        if Path(filename).name in SKIP:
            continue
        catalog.add(message, None, [(f"{prefix}/{filename}", lineno)], auto_comments=comments,
                    context=context)
    return catalog


def extract_app() -> Catalog:
    """Every msgid of cloudshare's own modules."""
    return _extract(PACKAGE_DIR, "cloudshare_p2p")


def extract_click() -> Catalog:
    """Every msgid of the installed click (its messages resolve in our catalog)."""
    import click

    return _extract(Path(click.__file__).resolve().parent, "click")


def merged(app: Catalog, click_catalog: Catalog) -> Catalog:
    template = Catalog(project=PROJECT, charset="utf-8", fuzzy=False)
    for source in (app, click_catalog):
        for message in source:
            if message.id:
                template.add(message.id, None, message.locations, auto_comments=message.auto_comments,
                             context=message.context)
    return template


def msgids(catalog: Catalog) -> set:
    """The msgids of a catalog (a plural entry counts as its singular)."""
    return {(m.id[0] if isinstance(m.id, tuple) else m.id) for m in catalog if m.id}


def read(path: Path, locale: str | None = None) -> Catalog:
    with open(path, "rb") as fh:
        return read_po(fh, locale=locale, domain=DOMAIN)


def write(path: Path, catalog: Catalog) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    write_po(buffer, catalog, width=100, sort_output=True, include_lineno=False, ignore_obsolete=True)
    path.write_bytes(buffer.getvalue())


def po_files() -> list[Path]:
    return sorted(LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


def compiled(po: Path) -> bytes:
    """The .mo bytes of a .po file (fuzzy entries are never used)."""
    catalog = read(po, locale=po.parent.parent.name)
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    return buffer.getvalue()


def cmd_extract() -> Catalog:
    click_catalog = extract_click()
    write(CLICK_POT, click_catalog)
    template = merged(extract_app(), click_catalog)
    write(POT, template)
    return template


def _translated(string: str | Sequence[str] | None) -> bool:
    """A msgstr is complete when it is not empty (a plural one: when none of its forms is)."""
    if isinstance(string, str):
        return bool(string)
    return string is not None and all(string)


def cmd_update() -> None:
    template = cmd_extract()
    for po in po_files():
        catalog = read(po, locale=po.parent.parent.name)
        catalog.update(template, no_fuzzy_matching=True)
        write(po, catalog)
        missing = [m.id for m in catalog if m.id and not _translated(m.string)]
        print(f"{po}: {len(catalog)} entries, {len(missing)} untranslated")


def cmd_compile() -> None:
    for po in po_files():
        po.with_suffix(".mo").write_bytes(compiled(po))
        print(f"compiled {po.with_suffix('.mo')}")


def main(argv: list[str]) -> int:
    commands = {"extract": cmd_extract, "update": cmd_update, "compile": cmd_compile}
    if len(argv) != 1 or argv[0] not in commands:
        print(f"usage: python -m cloudshare_p2p.i18n_tools {'|'.join(commands)}", file=sys.stderr)
        return 2
    commands[argv[0]]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
