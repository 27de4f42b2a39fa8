"""CTWA_DASHBOARD_USERS with a hashed password (``name:scrypt:…``, from ``ctwa dashboard --hash-password``): its
user gets in with the password and nobody gets in without it; a password is hashed once while the dashboard runs;
a hash that can't be read stops the dashboard at start, saying which user's, and never shows the hash."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import sys
from typing import Any

import pytest

from workers.dashboard import access
from workers.dashboard.access import Users, hash_password

NAME, PASSWORD = "anna", "correct horse battery staple"


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many scrypt hashes were worked out, from now on."""
    counted: list[int] = []
    scrypt = hashlib.scrypt

    def counting(*args: Any, **kwargs: Any) -> bytes:
        counted.append(1)
        return scrypt(*args, **kwargs)

    monkeypatch.setattr(access.hashlib, "scrypt", counting)
    return counted


async def test_a_hashed_password_lets_its_user_in_and_is_hashed_once(hashes: list[int]) -> None:
    users = Users([f"{NAME}:{hash_password(PASSWORD)}", "bob:plain password"])
    assert await users.allow(basic(NAME, PASSWORD))
    assert await users.allow(basic(NAME, PASSWORD))
    assert len(hashes) == 2  # the hash made above, and one check: the second answer came from memory
    assert await users.allow(basic("bob", "plain password"))  # a plain pair beside it
    assert len(hashes) == 2


@pytest.mark.parametrize(
    ("name", "password"),
    [(NAME, "wrong"), (NAME, PASSWORD + " "), ("bob", PASSWORD), ("nobody", "wrong"), (NAME, "")],
)
async def test_without_the_password_nobody_gets_in(hashes: list[int], name: str, password: str) -> None:
    users = Users([f"{NAME}:{hash_password(PASSWORD)}"])
    assert not await users.allow(basic(name, password))
    # A wrong password costs one hash whatever the name: its time does not tell whether the name exists.
    assert len(hashes) == 2
    assert not await users.allow(None)
    assert not await users.allow("Basic not-base64!")
    assert len(hashes) == 2


@pytest.mark.parametrize(
    "secret",
    [
        "scrypt:16384:8:1:c2FsdA",  # a part missing
        "scrypt:1000:8:1:c2FsdA:" + "A" * 43,  # N not a power of two
        "scrypt:16384:8:1:!!!:" + "A" * 43,  # not base64
        "scrypt:1048576:8:1:c2FsdA:" + "A" * 43,  # a gigabyte a check
        "scrypt:16384:8:1:c2FsdA:QUJD",  # a key too short
    ],
)
def test_a_hash_that_cannot_be_read_names_its_user_not_itself(secret: str) -> None:
    with pytest.raises(ValueError, match="user 2's hash is not scrypt:N:r:p:SALT:KEY") as refused:
        Users(["bob:plain", f"{NAME}:{secret}"])
    assert secret not in str(refused.value)


async def test_ctwa_dashboard_hashes_a_password_and_refuses_a_bad_hash() -> None:
    made = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers",
        "dashboard",
        "--hash-password",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(made.communicate(f"{PASSWORD}\n".encode()), 30)
    assert made.returncode == 0
    hashed = out.decode().strip()
    assert hashed.startswith("scrypt:16384:8:1:")
    assert PASSWORD not in hashed
    assert await Users([f"{NAME}:{hashed}"]).allow(basic(NAME, PASSWORD))

    broken = hashed[:-10]
    refused = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers",
        "dashboard",
        env={**os.environ, "CTWA_DASHBOARD_USERS": f"{NAME}:{broken}", "CTWA_DASHBOARD_PORT": "1"},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(refused.communicate(), 30)
    assert refused.returncode == 2
    assert "user 1's hash is not scrypt:N:r:p:SALT:KEY" in err.decode()
    assert broken not in err.decode()
