"""The one rule for Label Studio's address and key: the environment beats the project's /setup, part by part."""
from __future__ import annotations

import pytest

from labelstudio.target import LabelStudioTarget

SETUP = LabelStudioTarget.from_setup("http://ls.setup:8080/", "setup-token")


@pytest.mark.parametrize("env_url, env_key, expected", [
    (None, None, ("http://ls.setup:8080", "setup-token", True, True, "/setup")),
    ("http://ls.env:8080", None, ("http://ls.env:8080", "setup-token", False, True, "/setup")),
    (None, "env-key", ("http://ls.setup:8080", "env-key", True, False, "LABEL_STUDIO_API_KEY")),
    ("http://ls.env:8080", "env-key", ("http://ls.env:8080", "env-key", False, False, "LABEL_STUDIO_API_KEY")),
])
def test_the_environment_beats_setup_for_each_part(env_url, env_key, expected):
    target = SETUP.under(env_url, env_key)
    assert (target.url, target.key, target.url_from_setup, target.key_from_setup, target.key_source) == expected
    assert target.complete


def test_nothing_known_is_incomplete_and_names_no_key_source():
    target = LabelStudioTarget().under(None, None)
    assert (target.url, target.key, target.key_source, target.complete) == (None, None, None, False)
    assert not LabelStudioTarget.from_setup("http://ls:8080", None).under(None, None).complete


def test_messages_name_what_to_fix_where_it_came_from():
    from_setup = SETUP.under(None, None)
    assert from_setup.key_name == "the project's /setup token"
    assert from_setup.fix_host.startswith("the address Label Studio sent in /setup does not answer")
    configured = SETUP.under("http://ls.env:8080", "env-key")
    assert configured.key_name == "LABEL_STUDIO_API_KEY"
    assert configured.fix_host.startswith("set LABEL_STUDIO_URL")
