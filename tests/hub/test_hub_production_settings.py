"""Production settings, checked on real processes: `check --deploy` is clean with the
production variables, HTTPS turns on what it promises, the SQLite file and the generated
secret are owner-only, and no API token is stored in the clear (the carried-over ones
included)."""

from __future__ import annotations

import os
import secrets
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "HIVEMIND_HTTPS": "true",
    "HIVEMIND_TRUSTED_PROXY": "true",
    "ALLOWED_HOSTS": "hub.example.com",
    "DEBUG": "false",
}


def manage(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    environ.update({"HIVEMIND_DATA_DIR": str(data_dir), "DATABASE_URL": "", **env})
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def shell(data_dir: Path, code: str, **env: str) -> str:
    done = manage(data_dir, "shell", "-c", code, **env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_check_deploy_is_clean_with_the_production_variables(tmp_path: Path) -> None:
    done = manage(
        tmp_path,
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY=secrets.token_urlsafe(50),
        **PRODUCTION,
    )
    assert done.returncode == 0, done.stderr
    assert "no issues" in done.stdout


def test_check_deploy_is_clean_with_the_generated_secret_key(tmp_path: Path) -> None:
    done = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert done.returncode == 0, done.stderr


def test_without_https_check_deploy_names_what_is_missing(tmp_path: Path) -> None:
    done = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING")
    assert done.returncode != 0
    for check in ("W004", "W008", "W012", "W016"):
        assert f"security.{check}" in done.stderr


def test_https_turns_on_secure_cookies_hsts_and_the_redirect(tmp_path: Path) -> None:
    code = (
        "from django.conf import settings as s\n"
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT,"
        " s.SECURE_HSTS_SECONDS, s.SECURE_PROXY_SSL_HEADER)"
    )
    out = shell(tmp_path, code, **PRODUCTION).splitlines()[-1]
    assert out == "True True True 31536000 ('HTTP_X_FORWARDED_PROTO', 'https')"
    plain = shell(tmp_path, code).splitlines()[-1]
    assert plain.startswith("False False False 0") and "FORWARDED" not in plain


def test_the_sqlite_file_and_the_generated_secret_are_owner_only(tmp_path: Path) -> None:
    done = manage(tmp_path, "migrate", "--verbosity", "0")
    assert done.returncode == 0, done.stderr
    files = [tmp_path / "hivemind.sqlite3", tmp_path / "secret_key"]
    files += [p for p in tmp_path.glob("hivemind.sqlite3-*")]  # -wal, -shm while open
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    database = tmp_path / "hivemind.sqlite3"
    database.touch(mode=0o644)
    database.chmod(0o644)
    assert manage(tmp_path, "check").returncode == 0
    assert mode(database) == 0o600


def _rows(database: Path) -> bytes:
    """Every row of every table, as text: what a stolen copy of the file shows."""
    connection = sqlite3.connect(database)
    try:
        return "\n".join(connection.iterdump()).encode()
    finally:
        connection.close()


def test_no_api_token_is_stored_in_the_clear(tmp_path: Path) -> None:
    assert manage(tmp_path, "migrate", "--verbosity", "0").returncode == 0
    assert manage(tmp_path, "shell", "-c",
                  "from django.contrib.auth.models import User; User.objects.create(username='a')"
                  ).returncode == 0  # fmt: skip
    key = manage(tmp_path, "api_token", "a", "--name", "ci").stdout.strip()
    assert len(key) == 40
    dump = _rows(tmp_path / "hivemind.sqlite3")
    assert key.encode() not in dump and key[8:].encode() not in dump
    code = (
        "from hivemind_web.hub.services.api_tokens import api_token_user\n"
        f"print(api_token_user({key!r}).username)"
    )
    assert shell(tmp_path, code).splitlines()[-1] == "a"


def test_plaintext_tokens_of_an_older_hub_are_hashed_and_keep_working(tmp_path: Path) -> None:
    # The hub before this change: DRF's authtoken table, holding keys in the clear.
    assert manage(tmp_path, "migrate", "hub", "0009", "--verbosity", "0").returncode == 0
    database = tmp_path / "hivemind.sqlite3"
    key = secrets.token_hex(20)
    connection = sqlite3.connect(database)
    with connection:
        connection.execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name,"
            " email, is_staff, is_active, date_joined) VALUES ('', 0, 'old', '', '', '', 0, 1,"
            " '2026-01-01')"
        )
        connection.execute(
            'CREATE TABLE "authtoken_token" ("key" varchar(40) NOT NULL PRIMARY KEY,'
            ' "created" datetime NOT NULL, "user_id" integer NOT NULL UNIQUE)'
        )
        connection.execute(
            "INSERT INTO authtoken_token VALUES (?, '2026-01-01 00:00:00', "
            "(SELECT id FROM auth_user WHERE username = 'old'))",
            (key,),
        )
    connection.close()
    done = manage(tmp_path, "migrate", "--verbosity", "0")
    assert done.returncode == 0, done.stderr
    assert key.encode() not in _rows(database)
    code = (
        "from hivemind_web.hub.services.api_tokens import api_token_user\n"
        f"print(api_token_user({key!r}).username)"
    )
    assert shell(tmp_path, code).splitlines()[-1] == "old"


@pytest.mark.parametrize(
    ("name", "value"),
    [("HIVEMIND_HTTPS", "maybe"), ("HIVEMIND_HSTS_SECONDS", "-5"),
     ("HIVEMIND_REGISTER_RATE", "lots"), ("HIVEMIND_LOGIN_FAILURES", "0")],
)  # fmt: skip
def test_a_bad_production_setting_stops_the_hub_naming_it(
    tmp_path: Path, name: str, value: str
) -> None:
    done = manage(tmp_path, "check", **{name: value})
    assert done.returncode != 0 and name in done.stderr
