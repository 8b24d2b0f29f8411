"""Reconciliation and the proof of reserves against a real local node (Anvil) and PostgreSQL:
a planted shortfall is found and alerted once, a balanced state is not; a user's inclusion proof
verifies offline (`python -m ledger.verify reserves`, a subprocess on the JSON files) and every
tampered sum, balance or key is rejected with a clear message."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.contrib.auth.models import Permission
from django.db import transaction
from django.urls import reverse

from accounts.tests.factories import UserFactory
from conftest import ROOT
from ledger import services, signing
from ledger.evm import adapter as evm_adapter
from ledger.evm import reserves
from ledger.evm.addresses import deposit_address_for
from ledger.evm.models import ChainTransaction, ReserveReconciliation
from ledger.evm.sequencer import sequencer_run
from ledger.models import Asset, Transfer, Withdrawal
from ledger.services import funds
from marketplace.tests.factories import fund
from notifications.models import Notification
from tests.anvil import dev_account

pytestmark = pytest.mark.django_db(transaction=True)

COVERED = ReserveReconciliation.Status.COVERED
SHORTFALL = ReserveReconciliation.Status.SHORTFALL


@pytest.fixture
def moderator(refdata):
    user = UserFactory(username="mod", is_staff=True, email="mod@example.com")
    for codename in ("decide_trade", "view_reservereconciliation", "view_withdrawal"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


_credits = iter(range(1, 10**6))


def credit_from_chain(user: Any, code: str, amount: str, place: str = "deposits") -> None:
    """What the deposit watcher (or a sweep, for `hot`) books once coins are on the chain."""
    asset = Asset.objects.get(code=code)
    with transaction.atomic():
        services.transfer_post(
            idempotency_key=f"test-chain-credit:{next(_credits)}",
            debit=services.account_custody(asset=asset, place=place),
            credit=services.account_for_user(user=user, asset=asset),
            amount=Decimal(amount),
            kind=Transfer.Kind.DEPOSIT,
        )


def deposit_on_chain(evm: Any, user: Any, code: str, amount: str) -> None:
    """Coins to the user's deposit address, mined, then credited on the ledger."""
    address = deposit_address_for(user=user).address
    send = evm.send_eth if code == "ETH" else evm.send_token
    evm.w3.eth.wait_for_transaction_receipt(send(address, amount))
    credit_from_chain(user, code, amount)


def alerts() -> list[str]:
    return list(
        Notification.objects.filter(kind=Notification.Kind.FUNDS)
        .order_by("pk")
        .values_list("text", flat=True)
    )


def by_asset(rows: list[ReserveReconciliation]) -> dict[str, ReserveReconciliation]:
    return {row.asset.code: row for row in rows}


# --- reconciliation ---------------------------------------------------------------------------


def test_a_balanced_state_reports_no_shortfall(evm, alice, bob, moderator):
    # given coins on the chain that the ledger credited, and the hot wallet's own float
    deposit_on_chain(evm, alice, "ETH", "2")
    deposit_on_chain(evm, bob, "USDT", "500")
    # when
    rows = by_asset(reserves.reserves_reconcile())
    # then
    eth, usdt = rows["ETH"], rows["USDT"]
    assert (eth.status, usdt.status) == (COVERED, COVERED)
    assert eth.hot_wallet == evm.eth_balance(evm.hot.address) == Decimal(100)
    assert eth.deposit_addresses == Decimal(2)
    assert eth.address_count == 3  # the hot wallet, alice's and bob's deposit addresses
    assert eth.liabilities == eth.users == Decimal(2)
    assert eth.custody_book == Decimal(2)  # the ledger knows where these coins are
    assert eth.difference == eth.surplus == Decimal(100)
    assert usdt.onchain_total == Decimal(1_000_500)
    assert usdt.liabilities == Decimal(500)
    assert eth.block_number == evm.w3.eth.block_number
    assert alerts() == []


def test_a_ledger_credit_without_coins_is_a_shortfall_alerted_once_until_it_recovers(
    evm, alice, moderator, client
):
    # given 150 ETH credited on the ledger (by hand) while the chain holds the hot wallet's 100
    fund(alice, "ETH", "150")
    # when
    (first,) = reserves.reserves_reconcile(asset_code="ETH")
    (second,) = reserves.reserves_reconcile(asset_code="ETH")
    # then
    assert first.status == second.status == SHORTFALL
    assert first.shortfall == Decimal(50)
    assert first.liabilities == Decimal(150)
    texts = alerts()
    assert len(texts) == 1, texts  # the second run found it again and said nothing
    assert "Reserve shortfall in ETH" in texts[0]
    assert "50.000000000000000000 short" in texts[0]
    # and the admin shows it
    client.force_login(moderator)
    index = client.get(reverse("admin:index")).content.decode()
    assert 'data-shortfall="ETH"' in index
    page = client.get(reverse("admin:ledger_hot_wallet")).content.decode()
    assert 'data-status="shortfall"' in page
    assert "SHORTFALL of" in page

    # when coins arrive at alice's deposit address, it is covered again
    evm.w3.eth.wait_for_transaction_receipt(
        evm.send_eth(deposit_address_for(user=alice).address, "60")
    )
    (covered,) = reserves.reserves_reconcile(asset_code="ETH")
    assert covered.status == COVERED
    assert covered.surplus == Decimal(10)
    assert 'data-shortfall="ETH"' not in client.get(reverse("admin:index")).content.decode()

    # and a new shortfall after the recovery is news again
    fund(alice, "ETH", "20")
    (again,) = reserves.reserves_reconcile(asset_code="ETH")
    assert again.shortfall == Decimal(10)
    assert len(alerts()) == 2


def test_coins_moved_out_of_the_hot_wallet_behind_the_ledgers_back(evm, alice, moderator):
    # given 500 USDT owed to alice, swept to the hot wallet
    credit_from_chain(alice, "USDT", "500", place="hot")
    (before,) = reserves.reserves_reconcile(asset_code="USDT")
    assert before.status == COVERED
    # when the hot wallet's key sends 999,600 USDT away, unknown to the ledger
    evm.w3.eth.wait_for_transaction_receipt(
        evm.send_token(dev_account(5).address, "999600", sender=evm.hot)
    )
    (after,) = reserves.reserves_reconcile(asset_code="USDT")
    # then
    assert after.status == SHORTFALL
    assert after.hot_wallet == Decimal(400)
    assert after.shortfall == Decimal(100)
    assert after.custody_book == Decimal(500)  # the book still thinks 500 sit in the hot wallet
    assert len(alerts()) == 1


def test_a_withdrawal_mined_but_not_yet_posted_is_in_transit(evm, alice, moderator, monkeypatch):
    # given 6 ETH of alice's in the hot wallet; the test runs the sequencer itself
    monkeypatch.setattr(funds, "_queue_withdrawal", lambda withdrawal_id: None)
    monkeypatch.setattr(evm_adapter, "_wake_sequencer", lambda: None)
    credit_from_chain(alice, "ETH", "6", place="hot")
    (before,) = reserves.reserves_reconcile(asset_code="ETH")
    withdrawal = services.withdrawal_request(
        user=alice, asset_code="ETH", amount="5", address=dev_account(3).address
    )
    withdrawal = services.withdrawal_process(withdrawal_id=withdrawal.pk)
    assert withdrawal.status == Withdrawal.Status.SUBMITTED
    # a queued withdrawal not yet sent is still owed, and its coins are still on the chain
    (queued,) = reserves.reserves_reconcile(asset_code="ETH")
    assert (queued.in_transit, queued.difference) == (0, before.difference)
    # when the sequencer signs and broadcasts it, and the node mines it at once
    sequencer_run()
    tx = ChainTransaction.objects.get(withdrawal=withdrawal)
    receipt = evm.w3.eth.wait_for_transaction_receipt(tx.tx_hash)
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.SUBMITTED  # posted only after confirmations
    (sent,) = reserves.reserves_reconcile(asset_code="ETH")
    # then the 5 ETH that left count as in transit: only the gas changed the difference
    gas = Decimal(receipt["gasUsed"] * receipt["effectiveGasPrice"]) / 10**18
    assert sent.in_transit == Decimal(5)
    assert sent.liabilities == Decimal(6)
    assert before.difference - sent.difference == gas
    assert sent.status == COVERED
    # and once confirmed and posted, nothing is in transit; the fee kept is the platform's
    evm.node.mine(3)
    sequencer_run()
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.COMPLETED
    (posted,) = reserves.reserves_reconcile(asset_code="ETH")
    assert posted.in_transit == 0
    assert posted.liabilities == Decimal(1) - withdrawal.fee
    assert posted.difference == before.difference - gas + withdrawal.fee


def test_an_unreachable_node_is_recorded_not_compared(evm, alice, moderator):
    evm.node.stop()
    (row,) = reserves.reserves_reconcile(asset_code="ETH")
    assert row.status == ReserveReconciliation.Status.FAILED
    assert "node" in row.error
    assert "cannot read the node" in alerts()[0]


def test_the_hot_wallet_page(evm, alice, moderator, client, monkeypatch):
    # given (the withdrawal stays requested: no worker is told of it)
    monkeypatch.setattr("ledger.services.funds._queue_withdrawal", lambda withdrawal_id: None)
    credit_from_chain(alice, "ETH", "5", place="hot")
    services.withdrawal_request(
        user=alice, asset_code="ETH", amount="1.5", address=dev_account(3).address
    )
    client.force_login(moderator)
    # when
    index = client.get(reverse("admin:index")).content.decode()
    page = client.get(reverse("admin:ledger_hot_wallet")).content.decode()
    # then
    assert reverse("admin:ledger_hot_wallet") in index
    assert 'id="hot-wallet-ETH"' in page
    assert 'id="hot-wallet-USDT"' in page
    assert "100.000000" in page  # the hot wallet's ETH, read from the node
    eth = page.split('id="hot-wallet-ETH"')[1].split('id="hot-wallet-USDT"')[0]
    requested = eth.split('data-queued="requested"')[1].split("</tr>")[0]
    assert '<span class="count">1</span>' in requested
    assert "1.500000" in requested
    # reconcile now
    response = client.post(reverse("admin:ledger_hot_wallet_reconcile"))
    assert response.status_code == 302
    assert ReserveReconciliation.objects.filter(status=COVERED).count() == 2
    # someone without the permission is refused
    client.force_login(UserFactory(username="staffer", is_staff=True))
    assert client.get(reverse("admin:ledger_hot_wallet")).status_code == 403


# --- the proof of reserves and the offline verifier -------------------------------------------


def verify(
    tmp_path: Path, proof: dict[str, Any], keys: Any, *args: str
) -> subprocess.CompletedProcess:
    """`python -m ledger.verify reserves` as a user runs it: files, no Django, no database."""
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    env = {
        k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")
    }
    return subprocess.run(
        [sys.executable, "-m", "ledger.verify", "reserves", str(tmp_path / "proof.json"),
         "--keys", str(tmp_path / "keys.json"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.fixture
def published(evm, alice, bob, carol, client) -> dict[str, Any]:
    """A proof of reserves of three depositors' ETH, with alice's inclusion proof and the keys
    as the API gives them."""
    deposit_on_chain(evm, alice, "ETH", "2")
    deposit_on_chain(evm, bob, "ETH", "3")
    deposit_on_chain(evm, carol, "ETH", "0.5")
    proofs = {p.asset.code: p for p in reserves.reserves_proof_publish()}
    client.force_login(alice)
    pid = proofs["ETH"].pk
    return {
        "proof": proofs["ETH"],
        "usdt": proofs["USDT"],
        "mine": client.get(f"/api/v1/reserves/{pid}/proof/").json(),
        "published": client.get(f"/api/v1/reserves/{pid}/").json(),
        "list": client.get("/api/v1/reserves/").json(),
        "keys": client.get("/api/v1/ledger/public-key/").json(),
    }


def test_an_inclusion_proof_verifies_offline(published, alice, tmp_path):
    proof, mine = published["proof"], published["mine"]
    # the published proof: three accounts owed 5.5 ETH, covered by what the chain holds
    assert proof.leaf_count == 3
    assert proof.liabilities_total == Decimal("5.5")
    assert proof.onchain_total == Decimal("105.5")
    assert {a["balance"] for a in proof.addresses} == {
        "100.000000000000000000",
        "2.000000000000000000",
        "3.000000000000000000",
        "0.500000000000000000",
    }
    assert [p["asset"] for p in published["list"]["results"]] == ["ETH", "USDT"]
    assert published["usdt"].leaf_count == 0
    assert mine["leaf"]["account"] == f"user:{alice.pk}:ETH"
    assert mine["leaf"]["balance"] == "2.000000000000000000"
    assert mine["reserves"] == published["published"]
    # when
    (tmp_path / "published.json").write_text(json.dumps(published["published"]))
    run = verify(
        tmp_path,
        mine,
        published["keys"],
        "--published",
        str(tmp_path / "published.json"),
        "--balance",
        "2",
    )
    # then
    assert run.returncode == 0, run.stderr
    assert f"OK: user:{alice.pk}:ETH holds 2.000000000000000000 ETH" in run.stdout
    assert "105.500000000000000000 on chain" in run.stdout
    # and the published proof alone verifies too
    alone = verify(tmp_path, published["published"], published["keys"])
    assert alone.returncode == 0, alone.stderr


def _raise_later_sums(proof: dict[str, Any], start: int, by: Decimal) -> None:
    for step in proof["path"][start:]:
        step["node_sum"] = str(Decimal(step["node_sum"]) + by)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        # a node's sum raised: it is no longer the sum of its children
        (
            lambda p: p["path"][0].update(node_sum=str(Decimal(p["path"][0]["node_sum"]) + 1)),
            "step 0: the node's sum",
        ),
        # a sibling's sum raised, every node above it made to agree: the root's sum is not the
        # signed total
        (
            lambda p: (
                p["path"][0].update(sum=str(Decimal(p["path"][0]["sum"]) + 1)),
                _raise_later_sums(p, 0, Decimal(1)),
            ),
            "is not the published liabilities total",
        ),
        # a sibling hash swapped: the path leads elsewhere
        (
            lambda p: p["path"][-1].update(hash="00" * 32),
            "does not lead to the signed liabilities root",
        ),
        (lambda p: p["leaf"].update(balance="-2.000000000000000000"), "negative"),
        (lambda p: p["path"][0].update(sum="-1"), "negative"),
        (
            lambda p: p["leaf"].update(balance="20.000000000000000000"),
            "leaf_hash is not the hash of the leaf",
        ),
        (lambda p: p["reserves"].update(liabilities_total="5.4"), "signature is bad"),
        (lambda p: p["reserves"].update(onchain_total="1000"), "signature is bad"),
    ],
)
def test_a_tampered_proof_is_rejected(published, tmp_path, tamper, message):
    forged = copy.deepcopy(published["mine"])
    tamper(forged)
    run = verify(tmp_path, forged, published["keys"])
    assert run.returncode == 1
    assert message in run.stderr, run.stderr
    assert run.stderr.startswith("FAILED: ")


def test_the_signature_fails_with_another_key(published, tmp_path):
    other = Ed25519PrivateKey.generate()
    keys = {"keys": [{"key_id": k["key_id"], "public_key": signing.raw_public(other).hex()}
                     for k in published["keys"]["keys"]]}  # fmt: skip
    run = verify(tmp_path, published["mine"], keys)
    assert run.returncode == 1
    assert "signature is bad" in run.stderr


def test_a_balance_other_than_expected_is_rejected(published, tmp_path):
    run = verify(tmp_path, published["mine"], published["keys"], "--balance", "3")
    assert run.returncode == 1
    assert "is not the expected 3" in run.stderr


def test_a_signer_who_understates_the_total_is_caught(published, tmp_path):
    # the platform's own key signs a total lower than what its tree sums to
    key = Ed25519PrivateKey.generate()
    key_id = signing.key_id_for(signing.raw_public(key))
    forged = copy.deepcopy(published["mine"])
    forged["reserves"].update(liabilities_total="5.000000000000000000", key_id=key_id)
    fields = {k: v for k, v in forged["reserves"].items() if k not in ("id", "signature")}
    forged["reserves"]["signature"] = key.sign(signing.signed_bytes(fields)).hex()
    keys = {"keys": [{"key_id": key_id, "public_key": signing.raw_public(key).hex()}]}
    run = verify(tmp_path, forged, keys)
    assert run.returncode == 1
    assert "the root's sum 5.500000000000000000 is not the published liabilities total" in (
        run.stderr
    )


def test_reserves_that_do_not_cover_fail_the_check(evm, alice, client, tmp_path):
    # given 150 ETH owed while the chain holds 100
    fund(alice, "ETH", "150")
    (proof,) = reserves.reserves_proof_publish(asset_code="ETH")
    client.force_login(alice)
    mine = client.get(f"/api/v1/reserves/{proof.pk}/proof/").json()
    keys = client.get("/api/v1/ledger/public-key/").json()
    # when
    run = verify(tmp_path, mine, keys)
    # then
    assert run.returncode == 1
    assert "the reserves do not cover the liabilities" in run.stderr
    assert "(50.000000000000000000 short)" in run.stderr
    page = client.get(reverse("reserves")).content.decode()
    assert 'data-verified="no"' in page


def test_each_user_gets_only_their_own_proof(published, bob, client, refdata):
    pid = published["proof"].pk
    client.force_login(bob)
    bobs = client.get(f"/api/v1/reserves/{pid}/proof/").json()
    assert bobs["leaf"]["account"] == f"user:{bob.pk}:ETH"
    assert bobs["leaf"]["nonce"] != published["mine"]["leaf"]["nonce"]
    client.force_login(UserFactory(username="dave"))
    nothing = client.get(f"/api/v1/reserves/{pid}/proof/")
    assert nothing.status_code == 404
    assert "no ETH" in nothing.json()["error"]["message"]
    client.logout()
    assert client.get(f"/api/v1/reserves/{pid}/proof/").status_code in (401, 403)
    assert client.get("/api/v1/reserves/").status_code == 200  # the published proofs are public


def test_the_public_page_verifies_and_offers_the_download(published, alice, client):
    client.force_login(alice)
    page = client.get(reverse("reserves"))
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-verified="yes"' in html
    assert "Verified." in html
    mine_url = reverse("reserves_mine", args=[published["proof"].pk])
    assert mine_url in html
    download = client.get(mine_url)
    assert download["Content-Disposition"].startswith("attachment;")
    assert json.loads(download.content) == published["mine"]
    client.logout()
    assert "Log in</a> to download" in client.get(reverse("reserves")).content.decode()


def test_the_command_reconciles_and_publishes(evm, alice, moderator):
    from io import StringIO

    from django.core.management import call_command

    deposit_on_chain(evm, alice, "ETH", "2")
    out = StringIO()
    call_command("reserves", "reconcile", "--asset", "eth", stdout=out)
    call_command("reserves", "publish", "--asset", "eth", stdout=out)
    text = out.getvalue()
    assert "ETH: covered at block" in text
    assert "difference 100.000000000000000000" in text
    assert "2.000000000000000000 owed to 1 accounts" in text
