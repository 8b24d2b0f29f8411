"""A socket does not outlive its session or credential: a logout, the owner ending their other
sessions (a password change does too), an API key revoked or the token rotated closes the
sockets opened with it, with 4401, through the real Redis channel layer. Every other socket,
of the same user with another session or credential and of other users, stays open."""

from __future__ import annotations

from typing import Any

import pytest
from channels.testing.websocket import WebsocketCommunicator
from django.test import Client
from rest_framework.authtoken.models import Token

from accounts.services import (
    api_key_create,
    api_key_revoke,
    credentials_after_password_change,
    sessions_end_others,
    token_rotate,
)
from notifications.live.consumers import CLOSE_UNAUTHENTICATED
from notifications.tests.test_live_sockets import QUIET, bot, browser, connected, run, sync

pytestmark = pytest.mark.django_db(transaction=True)


def logged_in(user: Any) -> tuple[Client, str, bytes]:
    """A browser of `user`: its test client, session key and Cookie header."""
    client = Client()
    client.force_login(user)
    key = client.cookies["sessionid"].value
    return client, key, f"sessionid={key}".encode()


async def closed_with(socket: WebsocketCommunicator) -> int:
    """The close code the server sends next (event frames before it are skipped)."""
    while True:
        out = await socket.receive_output(timeout=5)
        if out["type"] == "websocket.close":
            return int(out.get("code", 1000))


async def still_open(socket: WebsocketCommunicator) -> bool:
    """Nothing arrives (no close), and a ping is still answered."""
    if not await socket.receive_nothing(timeout=QUIET):
        return False
    await socket.send_json_to({"type": "ping"})
    return (await socket.receive_json_from(timeout=5))["type"] == "pong"


def test_logging_out_closes_that_sessions_sockets_only(alice, bob):
    # given alice in two browsers (two sessions) and bob, each with a socket open
    leaving, _, leaving_cookie = logged_in(alice)
    _, _, other_cookie = logged_in(alice)
    _, _, bob_cookie = logged_in(bob)

    async def scenario() -> None:
        tab = await connected(browser(leaving_cookie))
        second_tab = await connected(browser(leaving_cookie))
        other_browser = await connected(browser(other_cookie))
        bobs = await connected(browser(bob_cookie))
        # when alice logs out in the first browser, through the logout view
        response = await sync(leaving.post)("/accounts/logout/")
        assert response.status_code in (200, 302)
        # then both tabs of that session close with 4401
        assert await closed_with(tab) == CLOSE_UNAUTHENTICATED
        assert await closed_with(second_tab) == CLOSE_UNAUTHENTICATED
        # and her other browser's socket and bob's stay open
        assert await still_open(other_browser)
        assert await still_open(bobs)
        # and the logged-out cookie can't open a new one
        ok, code = await browser(leaving_cookie).connect()
        assert (ok, code) == (False, CLOSE_UNAUTHENTICATED)
        for socket in (other_browser, bobs):
            await socket.disconnect()

    run(scenario)


def test_ending_the_other_sessions_closes_their_sockets_and_keeps_this_one(alice, bob):
    _, kept_key, kept_cookie = logged_in(alice)
    _, _, ended_cookie = logged_in(alice)
    _, _, bob_cookie = logged_in(bob)

    async def scenario() -> None:
        kept = await connected(browser(kept_cookie))
        ended = await connected(browser(ended_cookie))
        bobs = await connected(browser(bob_cookie))
        # when alice signs out her other sessions from the settings page's service
        assert await sync(sessions_end_others)(user=alice, keep_session_key=kept_key) >= 1
        # then the other browser's socket closes, hers and bob's stay
        assert await closed_with(ended) == CLOSE_UNAUTHENTICATED
        assert await still_open(kept)
        assert await still_open(bobs)
        for socket in (kept, bobs):
            await socket.disconnect()

    run(scenario)


def test_a_password_change_closes_the_other_sessions_and_the_old_tokens_stream(alice):
    _, kept_key, kept_cookie = logged_in(alice)
    _, _, ended_cookie = logged_in(alice)
    token = Token.objects.create(user=alice).key

    async def scenario() -> None:
        kept = await connected(browser(kept_cookie))
        ended = await connected(browser(ended_cookie))
        stream = await connected(bot(token))
        await sync(credentials_after_password_change)(user=alice, keep_session_key=kept_key)
        assert await closed_with(ended) == CLOSE_UNAUTHENTICATED
        assert await closed_with(stream) == CLOSE_UNAUTHENTICATED  # the token was rotated
        assert await still_open(kept)
        await kept.disconnect()

    run(scenario)


def test_revoking_an_api_key_or_rotating_the_token_closes_its_bot_stream_only(alice, bob):
    revoked, revoked_raw = api_key_create(user=alice, name="old bot", scopes=["read"])
    _, kept_raw = api_key_create(user=alice, name="new bot", scopes=["read"])
    token = Token.objects.create(user=alice).key
    _, bobs_raw = api_key_create(user=bob, name="bob's bot", scopes=["read"])

    async def scenario() -> None:
        old_bot = await connected(bot(revoked_raw))
        new_bot = await connected(bot(kept_raw))
        token_bot = await connected(bot(token))
        bobs_bot = await connected(bot(bobs_raw))
        # when alice revokes one key
        await sync(api_key_revoke)(user=alice, key_id=revoked.pk)
        # then its stream closes with 4401, and the key can't reconnect
        assert await closed_with(old_bot) == CLOSE_UNAUTHENTICATED
        ok, code = await bot(revoked_raw).connect()
        assert (ok, code) == (False, CLOSE_UNAUTHENTICATED)
        # and her other key's, her token's and bob's streams stay open
        for socket in (new_bot, token_bot, bobs_bot):
            assert await still_open(socket)
        # when she rotates the token, the token's stream closes; the keys' stay
        await sync(token_rotate)(user=alice)
        assert await closed_with(token_bot) == CLOSE_UNAUTHENTICATED
        for socket in (new_bot, bobs_bot):
            assert await still_open(socket)
            await socket.disconnect()

    run(scenario)
