"""The Sinch apps one deployment serves, from the apps file (``CTWA_APPS_FILE``, docs/apps.md): each app's id, name,
webhook secrets (several while rotating) and, optionally, its Meta setup for conversions.

    [[app]]
    id = "01EB4BNMPW0AY1E1HAEE2Y2D4Z"        # the Sinch app id (a callback's app_id)
    name = "Brand A — Spain"
    webhook_secrets = ["first", "second"]
    [app.meta]                               # optional
    dataset_id = "…"
    waba_id = "…"
    access_token_file = "/run/secrets/meta-brand-a"   # or access_token_env = "NAME"

A file that can't be used is refused whole, with the line and the reason (`AppsFileError`); secrets are never
echoed. Tokens are read when the file is: a token file or variable that is missing refuses the file too.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["App", "Apps", "AppsFileError", "MetaSetup", "load_apps"]

# Sinch's ids are ULIDs: 26 characters of Crockford's base 32.
_APP_ID = re.compile(r"[0-9A-Za-z]{26}")
_APP_KEYS = {"id", "name", "webhook_secrets", "meta"}
_META_KEYS = {"dataset_id", "waba_id", "access_token_file", "access_token_env", "partner_agent"}


class AppsFileError(Exception):
    """The apps file can't be used; the message names the file, the line and the reason."""


@dataclass(frozen=True)
class MetaSetup:
    """Where an app's conversions go: its dataset, its WhatsApp Business Account, its token."""

    dataset_id: str
    waba_id: str
    access_token: str = field(repr=False)
    partner_agent: str | None = None


@dataclass(frozen=True)
class App:
    id: str
    name: str
    webhook_secrets: tuple[str, ...] = field(repr=False)
    meta: MetaSetup | None = None


@dataclass(frozen=True)
class Apps:
    """The apps of a file, by id, and where the file was read from."""

    by_id: Mapping[str, App]
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, app_id: str) -> App | None:
        return self.by_id.get(app_id)

    def shared_secrets(self) -> dict[str, list[str]]:
        """Secrets given to more than one app, as the ids of the apps holding each (keyed by a placeholder: the
        secret itself is never shown)."""
        holders: dict[str, list[str]] = {}
        for app in self.by_id.values():
            for secret in set(app.webhook_secrets):
                holders.setdefault(secret, []).append(app.id)
        shared = [sorted(ids) for ids in holders.values() if len(ids) > 1]
        return {f"secret {number}": ids for number, ids in enumerate(shared, 1)}


def load_apps(path: Path, environ: Mapping[str, str] | None = None) -> Apps:
    """The apps of the file at ``path``; `AppsFileError` if it can't be read or used."""
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise AppsFileError(f"{path}: can't be read: {error}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise AppsFileError(f"{path}: not TOML: {error}") from None
    lines = _app_lines(text)
    unknown = set(data) - {"app"}
    if unknown:
        raise AppsFileError(f"{path}: unknown table or key {', '.join(sorted(unknown))} (an app is an [[app]] table)")
    tables = data.get("app", [])
    if not isinstance(tables, list) or not tables:
        raise AppsFileError(f"{path}: no [[app]] table")
    apps: dict[str, App] = {}
    for number, table in enumerate(tables):
        where = f"{path}, line {lines[number]}" if number < len(lines) else f"{path}, app {number + 1}"
        try:
            app = _app(table, path.parent, environ)
        except ValueError as problem:
            raise AppsFileError(f"{where}: {problem}") from None
        if app.id in apps:
            raise AppsFileError(f"{where}: app {app.id} is given twice")
        apps[app.id] = app
    return Apps(apps, path)


def _app(table: Any, directory: Path, environ: Mapping[str, str]) -> App:
    if not isinstance(table, dict):
        raise ValueError("an [[app]] must be a table")
    if unknown := set(table) - _APP_KEYS:
        raise ValueError(f"unknown key {', '.join(sorted(unknown))} (an app has {', '.join(sorted(_APP_KEYS))})")
    app_id = table.get("id")
    if not isinstance(app_id, str) or not _APP_ID.fullmatch(app_id):
        raise ValueError("id must be the Sinch app id: 26 letters and digits")
    name = table.get("name", app_id)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"app {app_id}: name must be a string")
    secrets = table.get("webhook_secrets")
    if (
        not isinstance(secrets, list)
        or not secrets
        or not all(isinstance(secret, str) and secret.strip() for secret in secrets)
    ):
        # An empty secret would be a key anyone can sign with.
        raise ValueError(f"app {app_id}: webhook_secrets must be a list of one or more non-empty strings")
    meta = table.get("meta")
    return App(app_id, name.strip(), tuple(secrets), None if meta is None else _meta(app_id, meta, directory, environ))


def _meta(app_id: str, meta: Any, directory: Path, environ: Mapping[str, str]) -> MetaSetup:
    if not isinstance(meta, dict):
        raise ValueError(f"app {app_id}: meta must be a table ([app.meta])")
    if unknown := set(meta) - _META_KEYS:
        raise ValueError(f"app {app_id}: unknown key meta.{', meta.'.join(sorted(unknown))}")
    for key in ("dataset_id", "waba_id"):
        if not isinstance(meta.get(key), str) or not meta[key].strip():
            raise ValueError(f"app {app_id}: meta.{key} is needed")
    partner_agent = meta.get("partner_agent")
    if partner_agent is not None and not isinstance(partner_agent, str):
        raise ValueError(f"app {app_id}: meta.partner_agent must be a string")
    file, variable = meta.get("access_token_file"), meta.get("access_token_env")
    if (file is None) == (variable is None):
        raise ValueError(f"app {app_id}: give meta.access_token_file or meta.access_token_env, one of them")
    if file is not None:
        if not isinstance(file, str) or not file:
            raise ValueError(f"app {app_id}: meta.access_token_file must be a path")
        token_path = directory / file  # a relative path is the apps file's folder's
        try:
            token = token_path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise ValueError(f"app {app_id}: meta.access_token_file {token_path} can't be read: {reason}") from None
        source = f"the file {token_path}"
    else:
        if not isinstance(variable, str) or not variable:
            raise ValueError(f"app {app_id}: meta.access_token_env must name an environment variable")
        token = environ.get(variable, "").strip()
        source = f"the variable {variable}"
    if not token:
        raise ValueError(f"app {app_id}: {source} holds no token")
    return MetaSetup(meta["dataset_id"].strip(), meta["waba_id"].strip(), token, partner_agent)


def _app_lines(text: str) -> list[int]:
    """The line of each [[app]] header, in order: where an app's problem is reported."""
    return [
        number for number, line in enumerate(text.splitlines(), 1) if re.match(r"\s*\[\[\s*app\s*\]\]\s*(#.*)?$", line)
    ]
