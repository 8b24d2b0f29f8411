"""Webhooks cannot reach inside (security finding 2): the address policy at registration and at
every delivery, the connection to the checked address, and a delivery log that keeps only a
status code and a fixed error class.

No test here asks a real DNS server (conftest's `dns` stub stands in for egress.resolve) or
connects anywhere but its own receiver on 127.0.0.1, and only with the test-only switch on.
Public addresses are only ever resolved; a delivery to one goes to a fake connection pool."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest
import urllib3
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from common.errors import ValidationFailed
from conftest import ROOT
from marketplace.tests.factories import make_trade
from notifications import egress, services, webhooks
from notifications.models import WebhookDelivery, WebhookEndpoint

PUBLIC = "93.184.216.34"

PRIVATE_IPV4 = [
    "127.0.0.1",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "0.0.0.0",  # noqa: S104 (an address refused, not one bound to)
    "100.64.0.1",
    "224.0.0.1",
    "255.255.255.255",
]
PRIVATE_IPV6 = ["::1", "::", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1"]
PRIVATE = PRIVATE_IPV4 + PRIVATE_IPV6


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@pytest.fixture
def locked_down(settings):
    """Production's switches: https only, no loopback receiver."""
    settings.WEBHOOK_ALLOW_HTTP = False
    settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES_FOR_TESTS = False
    return settings


@pytest.fixture
def no_sending(monkeypatch):
    """Any attempt to open a connection is recorded and fails the test's expectations."""
    sent: list[Any] = []

    def send(target, **kwargs):
        sent.append(target)
        return 200

    monkeypatch.setattr(webhooks, "_send", send)
    return sent


def _queue_delivery(user, url) -> WebhookDelivery:
    from accounts.tests.factories import UserFactory

    endpoint, _ = services.webhook_create(user=user, url=url)
    trade = make_trade(user, UserFactory(username="counterparty"))
    services.notify_trade_event(trade=trade, event=trade.events.get(new_state="funded"))
    return WebhookDelivery.objects.get(endpoint=endpoint)


# --- the policy itself ----------------------------------------------------------------------------


@pytest.mark.parametrize("address", PRIVATE)
def test_private_and_internal_addresses_are_refused(address):
    # given / when / then
    assert egress.address_refused(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "2002:a00:1::1",  # 6to4 around 10.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254
        "::a00:1",  # IPv4-compatible 10.0.0.1
        "198.18.0.1",  # benchmarking
        "192.0.2.1",  # documentation
        "100.127.255.254",  # the top of 100.64/10
    ],
)
def test_addresses_that_carry_or_hide_internal_ones_are_refused(address):
    assert egress.address_refused(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", [PUBLIC, "2606:2800:220:1:248:1893:25c8:1946", "1.1.1.1"])
def test_public_addresses_pass(address):
    assert not egress.address_refused(ipaddress.ip_address(address))


def test_the_test_switch_lets_loopback_through_and_nothing_else():
    # given the test-only switch
    allowed = {
        a
        for a in PRIVATE
        if not egress.address_refused(ipaddress.ip_address(a), allow_loopback=True)
    }
    # then only loopback passes; 10/8, link-local and the rest stay refused
    assert allowed == {"127.0.0.1", "::1"}


def test_check_url_resolves_once_and_describes_the_target(dns):
    # given a public name on a non-default port
    calls: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return [PUBLIC, PUBLIC, "2606:2800:220:1:248:1893:25c8:1946"]

    # when it is checked
    target = egress.check_url("https://Bot.Example.com.:8443/hooks/p2p?k=1#frag", resolver=resolver)
    # then the name was resolved once, and the target carries what to connect to and what to say
    assert calls == [("bot.example.com", 8443)]
    assert target.address == ipaddress.ip_address(PUBLIC)
    assert len(target.addresses) == 2
    assert (target.scheme, target.host, target.port) == ("https", "bot.example.com", 8443)
    assert target.target == "/hooks/p2p?k=1"
    assert target.host_header == "bot.example.com:8443"
    assert egress.check_url("https://bot.example.com").host_header == "bot.example.com"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://bot.example.com/hook", "scheme"),
        ("ftp://bot.example.com/hook", "invalid_url"),
        ("https://user:pw@bot.example.com/hook", "invalid_url"),
        ("https://nowhere.example/hook", "dns_error"),
        ("https://10.0.0.1/hook", "refused_address"),
    ],
)
def test_check_url_refusals_have_a_fixed_reason(url, reason):
    with pytest.raises(egress.EgressRefused) as refused:
        egress.check_url(url)
    assert refused.value.reason == reason


def test_a_zoned_link_local_answer_is_refused(dns):
    dns["zoned.example"] = ["fe80::1%eth0"]
    with pytest.raises(egress.EgressRefused) as refused:
        egress.check_url("https://zoned.example/")
    assert refused.value.reason == "refused_address"


# --- registration ---------------------------------------------------------------------------------


@pytest.mark.parametrize("address", PRIVATE)
@pytest.mark.django_db
def test_registration_refuses_private_addresses(alice, locked_down, address):
    # given / when a URL naming a private or internal address is registered
    with pytest.raises(ValidationFailed) as err:
        services.webhook_create(user=alice, url=f"https://{_url_host(address)}:6379/hook")
    # then it is refused on the url field, and nothing was stored
    assert set(err.value.fields) == {"url"}
    assert "webhooks cannot be sent to private or internal addresses" in err.value.message
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
def test_registration_message_names_the_field_and_the_address(alice, locked_down):
    with pytest.raises(ValidationFailed) as err:
        services.webhook_create(user=alice, url="https://10.0.0.1/hook")
    assert err.value.message == (
        "url: webhooks cannot be sent to private or internal addresses (10.0.0.1)."
    )
    assert err.value.fields == {
        "url": ["webhooks cannot be sent to private or internal addresses (10.0.0.1)."]
    }


@pytest.mark.parametrize(
    ("name", "answers"),
    [
        ("metadata.google.internal", ["169.254.169.254"]),
        ("localhost", ["127.0.0.1", "::1"]),
        ("redis.internal", ["10.0.0.7"]),
        ("v6only.example", ["fd12:3456::1"]),
        # one good answer does not make up for one bad one
        ("mixed.example", [PUBLIC, "10.0.0.1"]),
        ("mixed6.example", ["2606:2800:220:1:248:1893:25c8:1946", "::1"]),
    ],
)
@pytest.mark.django_db
def test_registration_refuses_names_resolving_to_private_addresses(
    alice, locked_down, dns, name, answers
):
    # given a name the (stub) resolver answers with at least one internal address
    dns[name] = answers
    # when it is registered
    with pytest.raises(ValidationFailed) as err:
        services.webhook_create(user=alice, url=f"https://{name}/hook")
    # then it is refused, without saying what the internal name resolves to
    assert set(err.value.fields) == {"url"}
    assert f"({name} resolves to one)" in err.value.message
    assert not any(a in err.value.message for a in answers)


@pytest.mark.django_db
def test_registration_refuses_a_name_that_does_not_resolve(alice, locked_down):
    with pytest.raises(ValidationFailed) as err:
        services.webhook_create(user=alice, url="https://nowhere.example/hook")
    assert set(err.value.fields) == {"url"}
    assert "could not be resolved" in err.value.message


@pytest.mark.django_db
def test_http_is_refused_unless_allowed(alice, locked_down):
    # given production's switches
    # when a plain http URL on a public name is registered
    with pytest.raises(ValidationFailed) as err:
        services.webhook_create(user=alice, url="http://bot.example.com/hook")
    # then it is refused; https on the same name is accepted (resolved only, nothing sent)
    assert err.value.fields == {"url": ["webhooks are sent over https:// only."]}
    endpoint, _ = services.webhook_create(user=alice, url="https://bot.example.com/hook")
    assert endpoint.url == "https://bot.example.com/hook"


@pytest.mark.django_db
def test_the_test_switch_still_refuses_other_private_addresses(alice, settings):
    # given the test settings (http and loopback allowed)
    assert settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES_FOR_TESTS
    # when a 10/8 address is registered, then it is refused all the same
    with pytest.raises(ValidationFailed):
        services.webhook_create(user=alice, url="http://10.0.0.1/hook")


# --- delivery -------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", PRIVATE)
@pytest.mark.django_db
def test_a_public_name_rebound_to_a_private_address_is_not_sent(
    alice, locked_down, dns, no_sending, address
):
    # given an endpoint registered while its name resolved to a public address
    delivery = _queue_delivery(alice, "https://bot.example.com/hook")
    # when the name resolves to an internal address by delivery time
    dns["bot.example.com"] = [address]
    result = services.webhook_deliver(delivery_id=delivery.pk)
    # then nothing is sent and the attempt is recorded as refused_address
    assert no_sending == []
    assert result is not None
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (stored.status, stored.attempts) == (WebhookDelivery.Status.PENDING, 1)
    assert (stored.last_status_code, stored.last_error) == (None, "refused_address")


@pytest.mark.django_db
def test_a_name_rebound_to_public_and_private_addresses_is_not_sent(
    alice, locked_down, dns, no_sending
):
    delivery = _queue_delivery(alice, "https://bot.example.com/hook")
    dns["bot.example.com"] = [PUBLIC, "169.254.169.254"]
    services.webhook_deliver(delivery_id=delivery.pk)
    assert no_sending == []
    assert WebhookDelivery.objects.get(pk=delivery.pk).last_error == "refused_address"


@pytest.mark.parametrize("address", PRIVATE)
@pytest.mark.django_db
def test_an_endpoint_edited_to_a_private_address_is_not_sent(
    alice, locked_down, no_sending, address
):
    # given an endpoint whose URL was changed after registration (the admin can edit it)
    delivery = _queue_delivery(alice, "https://bot.example.com/hook")
    WebhookEndpoint.objects.update(url=f"https://{_url_host(address)}/hook")
    # when it is delivered, then nothing is sent
    services.webhook_deliver(delivery_id=delivery.pk)
    assert no_sending == []
    assert WebhookDelivery.objects.get(pk=delivery.pk).last_error == "refused_address"


@pytest.mark.django_db
def test_http_endpoint_is_not_sent_once_http_is_off(alice, settings, no_sending):
    # given an http endpoint registered while http was allowed
    delivery = _queue_delivery(alice, "http://bot.example.com/hook")
    # when http is switched off, then its deliveries are refused, unsent
    settings.WEBHOOK_ALLOW_HTTP = False
    services.webhook_deliver(delivery_id=delivery.pk)
    assert no_sending == []
    assert WebhookDelivery.objects.get(pk=delivery.pk).last_error == "refused_url"


class FakeResponse:
    status = 204

    def __init__(self) -> None:
        self.read_called = False
        self.closed = False

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        self.read_called = True
        return b""

    def close(self) -> None:
        self.closed = True


class FakeHTTPSPool:
    """Stands in for urllib3's pool: records how it was built and what was asked of it."""

    made: list[FakeHTTPSPool] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.requests: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.response = FakeResponse()
        FakeHTTPSPool.made.append(self)

    def __enter__(self) -> FakeHTTPSPool:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def urlopen(self, *args: Any, **kwargs: Any) -> FakeResponse:
        self.requests.append((args, kwargs))
        return self.response


@pytest.mark.django_db
def test_https_connects_to_the_checked_address_and_verifies_the_host_name(
    alice, locked_down, dns, monkeypatch
):
    # given a public name and a connection layer that sends nothing
    FakeHTTPSPool.made = []
    monkeypatch.setattr(urllib3, "HTTPSConnectionPool", FakeHTTPSPool)
    delivery = _queue_delivery(alice, "https://bot.example.com/hooks/p2p?team=7")
    # when it is delivered
    result = services.webhook_deliver(delivery_id=delivery.pk)
    # then the pool connects to the address that was checked, while TLS sends and verifies the
    # URL's host name and the Host header carries it
    (pool,) = FakeHTTPSPool.made
    assert pool.kwargs["host"] == PUBLIC
    assert pool.kwargs["port"] == 443
    assert pool.kwargs["server_hostname"] == "bot.example.com"
    assert pool.kwargs["assert_hostname"] == "bot.example.com"
    assert pool.kwargs["cert_reqs"] == "CERT_REQUIRED"
    (args, kwargs) = pool.requests[0]
    assert args == ("POST", "/hooks/p2p?team=7")
    assert kwargs["headers"]["Host"] == "bot.example.com"
    assert kwargs["redirect"] is False
    assert kwargs["retries"] is False
    # and the answer's status is all that is looked at
    assert not pool.response.read_called
    assert pool.response.closed
    assert result is not None
    assert result.status == WebhookDelivery.Status.DELIVERED


@pytest.mark.django_db
def test_the_name_is_not_looked_up_again_when_connecting(alice, dns, receiver):
    # given a name only the stub knows, pointing at the test's own receiver
    dns["hooks.test"] = ["127.0.0.1"]
    port = receiver.server.server_address[1]
    delivery = _queue_delivery(alice, f"http://hooks.test:{port}/hooks")
    # when it is delivered (a second lookup through the system resolver would fail)
    services.webhook_deliver(delivery_id=delivery.pk)
    # then it arrived, with the registered name in the Host header
    (got,) = receiver.received
    assert got.headers["host"] == f"hooks.test:{port}"
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == WebhookDelivery.Status.DELIVERED


@pytest.mark.django_db
def test_a_redirect_is_recorded_and_not_followed(alice, receiver):
    # given a receiver that redirects to another of its own paths
    receiver.answer(302, headers={"Location": receiver.url + "/elsewhere"})
    delivery = _queue_delivery(alice, receiver.url)
    # when it is delivered
    services.webhook_deliver(delivery_id=delivery.pk)
    # then one POST went out, and the attempt is a failure of class redirect
    assert [r.path for r in receiver.received] == ["/hooks"]
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (stored.status, stored.last_status_code, stored.last_error) == (
        WebhookDelivery.Status.PENDING,
        302,
        "redirect",
    )


@pytest.mark.django_db
def test_the_answer_body_never_reaches_the_delivery_log(alice, receiver):
    # given an internal page that answers 404 with a secret
    receiver.answer(404, body=b"INTERNAL-ONLY secret=x")
    delivery = _queue_delivery(alice, receiver.url)
    # when it is delivered
    services.webhook_deliver(delivery_id=delivery.pk)
    # then only the status code and a fixed class are kept, in the database and in the API
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (stored.last_status_code, stored.last_error) == (404, "http_status")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    log = client.get(f"/api/v1/webhooks/{stored.endpoint_id}/deliveries/")
    assert log.status_code == 200
    (row,) = log.json()["results"]
    assert (row["last_status_code"], row["last_error"]) == (404, "http_status")
    assert b"INTERNAL" not in log.content
    assert b"secret=x" not in log.content


@pytest.mark.django_db
def test_a_closed_port_is_a_connection_error_without_details(alice):
    # given a port nobody listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    delivery = _queue_delivery(alice, f"http://127.0.0.1:{dead_port}/x")
    # when it is delivered, then "connection refused" is not spelled out
    services.webhook_deliver(delivery_id=delivery.pk)
    assert WebhookDelivery.objects.get(pk=delivery.pk).last_error == "connection_error"


@pytest.mark.django_db
def test_a_silent_receiver_is_a_timeout(alice, monkeypatch):
    # given a receiver that accepts the connection and never answers
    monkeypatch.setattr(webhooks, "DELIVERY_TIMEOUT_SECONDS", 0.3)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True)
    thread.start()
    try:
        delivery = _queue_delivery(alice, f"http://127.0.0.1:{silent.getsockname()[1]}/x")
        # when it is delivered
        services.webhook_deliver(delivery_id=delivery.pk)
    finally:
        thread.join(5)
        for conn in accepted:
            conn.close()
        silent.close()
    # then the attempt timed out
    assert WebhookDelivery.objects.get(pk=delivery.pk).last_error == "timeout"


@pytest.mark.django_db
def test_a_failed_tls_handshake_is_a_tls_error(alice, receiver):
    # given https:// to a receiver that speaks plain HTTP
    port = receiver.server.server_address[1]
    delivery = _queue_delivery(alice, f"https://127.0.0.1:{port}/hooks")
    # when it is delivered, then the handshake fails and nothing of it is kept but the class
    services.webhook_deliver(delivery_id=delivery.pk)
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (stored.last_status_code, stored.last_error) == (None, "tls_error")


# --- production refuses the test switches ---------------------------------------------------------


def _import_production(**overrides: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_ALLOW")},
        "SECRET_KEY": "x" * 30 + "-a-long-random-production-secret-key-value-0123456789",
        "LEDGER_SIGNING_KEY": "5e1f0c9a2b7d4e8f6a3c1b0d9e7f5a2c4b6d8e0f1a3c5e7b9d2f4a6c8e0b1d3f",
        "ALLOWED_HOSTS": "p2p.example.com",
        **overrides,
    }
    return subprocess.run(
        [sys.executable, "-c", "import config.settings.production"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    "switch", ["WEBHOOK_ALLOW_PRIVATE_ADDRESSES_FOR_TESTS", "WEBHOOK_ALLOW_HTTP"]
)
def test_production_settings_refuse_the_test_switches(switch):
    # given / when production settings are imported with a test switch on
    run = _import_production(**{switch: "True"})
    # then they refuse to load
    assert run.returncode != 0
    assert "ImproperlyConfigured" in run.stderr
    assert switch in run.stderr


def test_production_settings_load_with_the_switches_off():
    run = _import_production()
    assert run.returncode == 0, run.stderr
