"""Secrets in URLs are masked wherever chordguard prints them, in one pass over any text."""

from __future__ import annotations

import pytest

from chordguard._urls import mask_text, mask_url


def test_passwords_are_masked_in_urls_and_free_text():
    assert mask_url("redis://user:secret@h:6379/0") == "redis://user:**@h:6379/0"
    text = "could not reach amqp://guest:pw@x// nor db+postgresql://pg:s3cr3t@db/test"
    assert mask_text(text) == "could not reach amqp://guest:**@x// nor db+postgresql://pg:**@db/test"
    assert mask_text("redis://:" + "p" * 5000 + "@host/0") == "redis://:**@host/0"


@pytest.mark.timeout(20)  # the old pattern backtracked at every offset: hours for this text
@pytest.mark.parametrize("noise", ["x", "a:", "a://", "a://u:"])
def test_a_huge_argument_is_masked_without_backtracking(noise):
    text = noise * 250_000 + " redis://u:secret@h/0"
    masked = mask_text(text)
    assert masked.endswith(" redis://u:**@h/0") and "secret" not in masked


def test_printing_the_guard_never_shows_the_store_password():
    from celery import Celery

    import chordguard

    app = Celery("masked", broker="memory://", backend="redis://127.0.0.1:6379/3")
    guard = chordguard.install(app, store="redis://:topsecret@127.0.0.1:6379/4")
    for text in (repr(guard), str(guard), repr(guard.settings)):
        assert "topsecret" not in text and "redis://:**@127.0.0.1:6379/4" in text
