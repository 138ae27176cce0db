"""Messages in the user's language (gettext catalogs compiled by Babel, shipped in the package).

English is the source language: every user-facing string is written in English and wrapped in
`_()` (or `ngettext`) so that `pybabel extract` finds it (see `make i18n`). The language is chosen
once, before the command modules are imported, because click turns option help into text when
its decorators run:

1. `--lang LANG` on the command line (read from `sys.argv` early; also a global option),
2. `CLOUDSHARE_LANG`,
3. POSIX: `LANGUAGE`, `LC_ALL`, `LC_MESSAGES`, `LANG` (the first one set; `C`/`POSIX` mean English),
4. Windows: the user's UI language (`GetUserDefaultUILanguage`, Windows sets no LANG),
5. else English. A language without a catalog falls back to English.

click has no catalogs of its own: it calls `gettext.gettext` from its modules. Our catalog holds
its msgids too (extracted from the installed click, pinned in pyproject), and `setup_language`
points click's `_`/`ngettext` at our catalog, so `--help`, "Usage:" and usage errors follow the
same language without touching the process environment (the program that `cloudshare run`
starts inherits no LANGUAGE from us).

`--json` output is data and never translated; nor are the host's key=value audit log lines.
"""

from __future__ import annotations

import gettext
import locale
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

DOMAIN = "cloudshare"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
SOURCE_LANGUAGE = "en"
ENV_VAR = "CLOUDSHARE_LANG"
LOCALE_VARS = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")

_translation: gettext.NullTranslations | None = None  # chosen on first use (or by setup_language)
_language = SOURCE_LANGUAGE


def _catalog() -> gettext.NullTranslations:
    if _translation is None:
        setup_language()
    assert _translation is not None
    return _translation


def _(message: str) -> str:
    """The message in the chosen language (the English text when it has no translation).

    The first call chooses the language (`setup_language`), so whichever module's decorators
    run first, option help is already in the user's language.
    """
    return _catalog().gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return _catalog().ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Mark a string for extraction only; translate it later with `_()` where it is shown."""
    return message


def language() -> str:
    """The language in use ("en", "ja", ...)."""
    return _language


def available_languages() -> list[str]:
    """Languages with a compiled catalog, plus English (the source)."""
    found = sorted(p.parent.parent.name for p in LOCALE_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.mo"))
    return [SOURCE_LANGUAGE, *found]


def normalize(value: str | None) -> str | None:
    """`ja_JP.UTF-8` → `ja` (a language we have); C/POSIX/en → `en`; unknown → None."""
    if not value:
        return None
    code = value.strip().split(".")[0].split("@")[0].replace("-", "_")
    if not code:
        return None
    if code.upper() in ("C", "POSIX"):
        return SOURCE_LANGUAGE
    known = {lang.lower(): lang for lang in available_languages()}
    for candidate in (code.lower(), code.split("_")[0].lower()):
        if candidate in known:
            return known[candidate]
    return None


def lang_from_argv(argv: Sequence[str]) -> str | None:
    """`--lang X` or `--lang=X` among the arguments (before a `--`)."""
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--lang" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--lang="):
            return arg.split("=", 1)[1]
    return None


def _windows_ui_language() -> str | None:
    """The user's display language on Windows (0x0411 → ja_JP); None elsewhere."""
    if sys.platform != "win32":
        return None
    try:
        import ctypes

        lcid = ctypes.windll.kernel32.GetUserDefaultUILanguage()  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None
    return locale.windows_locale.get(lcid)


def choose_language(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The language to use, by the rules in the module's docstring (always a supported one)."""
    env = os.environ if environ is None else environ
    explicit = lang_from_argv(sys.argv[1:] if argv is None else argv) or env.get(ENV_VAR)
    if explicit:
        return normalize(explicit) or SOURCE_LANGUAGE
    for var in LOCALE_VARS:
        value = env.get(var)
        if not value:
            continue
        for item in value.split(":"):  # LANGUAGE may list several
            found = normalize(item)
            if found:
                return found
        return SOURCE_LANGUAGE
    return normalize(_windows_ui_language()) or SOURCE_LANGUAGE


def setup_language(lang: str | None = None) -> str:
    """Load the catalog of `lang` (default: `choose_language()`) and point click at it."""
    global _translation, _language
    chosen = normalize(lang) if lang else choose_language()
    chosen = chosen or SOURCE_LANGUAGE
    if chosen == SOURCE_LANGUAGE:
        _translation = gettext.NullTranslations()
    else:
        _translation = gettext.translation(DOMAIN, str(LOCALE_DIR), languages=[chosen], fallback=True)
    _language = chosen
    _route_click()
    return chosen


CLICK_MODULES = ("core", "decorators", "exceptions", "formatting", "parser", "shell_completion",
                 "termui", "types", "utils", "_termui_impl")


def _route_click() -> None:
    """click's modules call `gettext.gettext` as `_`: let them use our catalog instead."""
    import importlib

    for name in CLICK_MODULES:
        try:
            module = importlib.import_module(f"click.{name}")
        except ImportError:
            continue
        if hasattr(module, "_"):
            module._ = _  # type: ignore[attr-defined]
        if hasattr(module, "ngettext"):
            module.ngettext = ngettext  # type: ignore[attr-defined]
        if name == "formatting" and hasattr(module, "term_len"):
            module.term_len = _term_width  # type: ignore[attr-defined]  # help columns by display width


def _term_width(text: str) -> int:
    """click's `term_len` (ANSI codes stripped), counting East Asian wide characters as two."""
    from click._compat import strip_ansi

    return width(strip_ansi(text))


# --- display width ---------------------------------------------------------------------------------


def width(text: str) -> int:
    """Columns `text` takes on a terminal: East Asian wide and fullwidth characters count two,
    combining marks none (ambiguous-width characters count one, as most terminals show them)."""
    import unicodedata

    total = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        total += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return total


def pad(text: str, columns: int) -> str:
    """`text` padded with spaces to `columns` display columns (like `ljust`, but by width)."""
    return text + " " * max(0, columns - width(text))
