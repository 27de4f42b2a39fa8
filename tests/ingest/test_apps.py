"""The apps file (ingest/apps.py): each app's id, name, webhook secrets and Meta setup; a file that can't be used is
refused whole with its line and reason, and never echoes a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.apps import AppsFileError, MetaSetup, load_apps

A = "01EB4BNMPW0AY1E1HAEE2Y2D4Z"
B = "01K94FXGRR71HFE865V215DE1C"

GOOD = f"""
# Two brands.
[[app]]
id = "{A}"
name = "Brand A — Spain"
webhook_secrets = ["a-first", "a-second"]
[app.meta]
dataset_id = "111"
waba_id = "waba-a"
access_token_file = "meta-a.token"

[[app]]
id = "{B}"
webhook_secrets = ["b-only"]
[app.meta]
dataset_id = "222"
waba_id = "waba-b"
access_token_env = "META_TOKEN_B"
partner_agent = "agency"
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "apps.toml"
    path.write_text(text)
    return path


def test_each_app_has_its_secrets_and_its_meta_setup(tmp_path: Path) -> None:
    (tmp_path / "meta-a.token").write_text("token-a\n")
    apps = load_apps(_file(tmp_path, GOOD), {"META_TOKEN_B": "token-b"})
    assert len(apps) == 2
    a, b = apps.get(A), apps.get(B)
    assert a is not None
    assert b is not None
    assert (a.name, a.webhook_secrets) == ("Brand A — Spain", ("a-first", "a-second"))
    assert a.meta == MetaSetup("111", "waba-a", "token-a")  # the file's folder holds a relative token file
    assert (b.name, b.webhook_secrets) == (B, ("b-only",))  # named by its id when it has no name
    assert b.meta == MetaSetup("222", "waba-b", "token-b", "agency")
    assert apps.get("01XXXXXXXXXXXXXXXXXXXXXXXX") is None
    assert apps.shared_secrets() == {}
    for shown in (repr(apps), repr(a), repr(b)):
        assert "a-first" not in shown
        assert "token-a" not in shown


def test_a_secret_given_to_two_apps_is_found_without_being_shown(tmp_path: Path) -> None:
    text = f'[[app]]\nid = "{A}"\nwebhook_secrets = ["same"]\n[[app]]\nid = "{B}"\nwebhook_secrets = ["x", "same"]\n'
    assert load_apps(_file(tmp_path, text)).shared_secrets() == {"secret 1": [A, B]}


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('[[app]\nid = "x"', "not TOML: "),
        ("", "no [[app]] table"),
        ('apps = "x"\n', "unknown table or key apps"),
        ('[[app]]\nid = "short"\nwebhook_secrets = ["s"]\n', "line 1: id must be the Sinch app id"),
        (f'# one\n\n[[app]]\nid = "{A}"\n', f"line 3: app {A}: webhook_secrets must be a list"),
        (f'[[app]]\nid = "{A}"\nwebhook_secrets = ["ok", " "]\n', "webhook_secrets must be a list of one or more"),
        (f'[[app]]\nid = "{A}"\nwebhook_secrets = []\n', "webhook_secrets must be a list of one or more"),
        (f'[[app]]\nid = "{A}"\nwebhook_secrets = ["s"]\nsecret = "x"\n', "unknown key secret"),
        (
            f'[[app]]\nid = "{A}"\nwebhook_secrets = ["s"]\n[[app]]\nid = "{A}"\nwebhook_secrets = ["t"]\n',
            f"line 4: app {A} is given twice",
        ),
        (
            f'[[app]]\nid = "{A}"\nwebhook_secrets = ["s"]\n[app.meta]\ndataset_id = "1"\nwaba_id = "w"\n',
            "give meta.access_token_file or meta.access_token_env, one of them",
        ),
        (
            f'[[app]]\nid = "{A}"\nwebhook_secrets = ["s"]\n[app.meta]\nwaba_id = "w"\naccess_token_env = "T"\n',
            "meta.dataset_id is needed",
        ),
        (
            f'[[app]]\nid = "{A}"\nwebhook_secrets = ["s"]\n[app.meta]\ndataset_id = "1"\nwaba_id = "w"\n'
            'access_token_env = "NOT_SET_ANYWHERE"\n',
            "the variable NOT_SET_ANYWHERE holds no token",
        ),
        (
            f'[[app]]\nid = "{A}"\nwebhook_secrets = ["s"]\n[app.meta]\ndataset_id = "1"\nwaba_id = "w"\n'
            'access_token_file = "missing.token"\n',
            "can't be read: No such file or directory",
        ),
    ],
)
def test_a_file_that_cant_be_used_is_refused_with_its_line_and_reason(tmp_path: Path, text: str, said: str) -> None:
    with pytest.raises(AppsFileError) as refused:
        load_apps(_file(tmp_path, text), {})
    assert said in str(refused.value)
    assert str(tmp_path / "apps.toml") in str(refused.value)


def test_a_secret_is_never_in_a_refusal(tmp_path: Path) -> None:
    text = f'[[app]]\nid = "{A}"\nwebhook_secrets = ["the-secret", 7]\n'
    with pytest.raises(AppsFileError) as refused:
        load_apps(_file(tmp_path, text))
    assert "the-secret" not in str(refused.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AppsFileError, match="can't be read"):
        load_apps(tmp_path / "nowhere.toml")
