"""The study database's URL as it may be shown (no password), and opening it read-only.

`autotune run` creates its storage (autotune.study.opening.make_storage); `report`, `pareto` and a
re-tune's look back only read one, so they open it as it is: a database that is not there
stays not there (no empty autotune.db left behind), and nothing in it is written.
"""

from __future__ import annotations

import re
import sqlite3
import urllib.parse
import warnings
from pathlib import Path
from typing import Any

import optuna

from autotune.core.errors import UserError

DEFAULT_URL = "sqlite:///autotune.db"
STORAGE_ENV = "AUTOTUNE_STORAGE"

_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd|secret|token)=)[^&#]*")


def _userinfo(url: str) -> tuple[str, str, str] | None:
    """(what precedes the password, the password, what follows it), if the URL has one."""
    scheme, sep, rest = url.partition("://")
    if not sep:  # not a URL at all ("user:password@host/db"): its password hidden too
        scheme, rest = "", url
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" not in netloc:
        return None
    creds, host = netloc.rsplit("@", 1)
    user, colon, password = creds.partition(":")
    if not colon:
        return None
    return f"{scheme}{sep}{user}:", password, "@" + host + rest[len(netloc):]


def redact_url(url: str) -> str:
    """The URL with its password (in the user part or the query) replaced by ***."""
    parts = _userinfo(url)
    if parts is not None:
        url = f"{parts[0]}***{parts[2]}"
    return _QUERY_SECRET.sub(r"\1***", url)


def secrets_of(url: str) -> list[str]:
    """The URL's passwords as they may appear in text: raw and percent-decoded."""
    parts = _userinfo(url)
    found = [parts[1]] if parts is not None else []
    found += [m.group(0).split("=", 1)[1] for m in _QUERY_SECRET.finditer(url)]
    out = {s for f in found if f for s in (f, urllib.parse.unquote(f))}
    return sorted(out, key=len, reverse=True)


def hide_secrets(text: str, url: str) -> str:
    """`text` (a driver's error, say) with the URL and its password nowhere in clear."""
    text = text.replace(url, redact_url(url))
    for secret in secrets_of(url):
        text = text.replace(secret, "***")
    return text


def open_error(url: str, exc: BaseException) -> UserError:
    """A driver's failure as one line that names the URL without its password."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return UserError(f"--storage: cannot open {redact_url(url)!r}: {hide_secrets(first, url)}")


class NoDatabase(UserError):
    """The storage holds no study database: a file that is not there, or no Optuna tables."""


def open_existing(url: str) -> optuna.storages.BaseStorage:
    """The storage at `url`, read-only; NoDatabase when there is none, UserError (one line,
    no password) when it cannot be opened."""
    import sqlalchemy
    from sqlalchemy.engine import make_url

    if "://" not in url:
        raise UserError(f"--storage: {redact_url(url)!r} is not a storage URL "
                        f"(e.g. {DEFAULT_URL})")
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError, ValueError
        raise open_error(url, exc) from None
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        kwargs["creator"] = _sqlite_reader(url, parsed.database)
    elif parsed.get_backend_name() == "postgresql" and "psycopg" in parsed.drivername:
        kwargs["connect_args"] = {"options": "-c default_transaction_read_only=on"}
    try:
        engine = sqlalchemy.create_engine(parsed, **kwargs)
        try:
            studies = sqlalchemy.inspect(engine).has_table("studies")
        finally:
            engine.dispose()
    except Exception as exc:  # drivers raise many kinds: a missing module, a refused login
        raise open_error(url, exc) from exc
    if not studies:
        raise NoDatabase(f"--storage {redact_url(url)}: holds no study (no Optuna tables); "
                         f"`autotune run` creates them (--storage, else ${STORAGE_ENV}, else "
                         f"{DEFAULT_URL})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs,
                                              skip_table_creation=True)
    except Exception as exc:
        raise open_error(url, exc) from exc


def _sqlite_reader(url: str, database: str | None) -> Any:
    """A connection factory that opens the file read-only, and never creates it."""
    if not database or database == ":memory:" or database.startswith("file:"):
        raise NoDatabase(f"--storage {redact_url(url)}: names no database file "
                         f"(e.g. {DEFAULT_URL})")
    path = Path(database)
    try:
        found = path.is_file()
    except OSError as exc:  # a folder on the way that cannot be entered
        raise UserError(f"--storage {redact_url(url)}: {path}: {exc.strerror}") from None
    if not found:
        raise NoDatabase(f"--storage {redact_url(url)}: no database at {path} (`autotune "
                         "run` creates it; report and pareto read the same one: --storage, "
                         f"else ${STORAGE_ENV}, else {DEFAULT_URL})")
    uri = f"{path.resolve().as_uri()}?mode=ro"
    return lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)


def load_existing(url: str, study: str) -> optuna.Study:
    """A study of the storage at `url`, read-only; UserError (one line) when it is not there."""
    storage = open_existing(url)
    try:
        return optuna.load_study(study_name=study, storage=storage)
    except KeyError:
        raise UserError(f"no study {study!r} in {redact_url(url)}") from None


__all__ = ["DEFAULT_URL", "STORAGE_ENV", "NoDatabase", "hide_secrets", "load_existing",
           "open_existing", "redact_url"]
