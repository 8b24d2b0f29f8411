"""A deposit on the chain, watched live from the wallet page: the user's address with its QR
code, then "seen, 1/2 confirmations", then "Credited", without a reload (the page polls its
deposits part). A real local node (Anvil); the watcher runs here, as its beat task would."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from ledger.evm.addresses import deposit_address_for
from ledger.evm.deposits import deposits_watch
from tests.browser.helpers import assert_not_reloaded, login, mark_no_reload, screenshot

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_deposit_shows_seen_then_credited_live(open_page, evm, alice):
    # given alice on her wallet page, the ETH deposit panel open
    address = deposit_address_for(user=alice).address
    page = login(open_page(), "alice")
    page.goto("/wallet/")
    page.get_by_text("ETH · Ether").click()
    panel = page.get_by_test_id("deposit-address-ETH")
    expect(panel.get_by_test_id("deposit-address-value")).to_have_text(address)
    expect(panel.locator(".deposit-qr svg")).to_be_visible()
    expect(panel.get_by_test_id("deposit-confirmations")).to_have_text("2")
    mark_no_reload(page)
    # when 0.5 ETH arrives in a block the watcher sees
    evm.send_eth(address, "0.5")
    deposits_watch()
    # then the page shows it seen, with its confirmations so far
    row = page.get_by_test_id("chain-deposit")
    expect(row).to_contain_text("seen, 1/2 confirmations")
    expect(row).to_contain_text("0.5")
    # and credited once the next block is in, still without a reload
    evm.node.mine(1)
    deposits_watch()
    expect(row).to_contain_text("Credited")
    assert_not_reloaded(page)
    screenshot(page, "wallet-chain-deposit")
    # and the balance says so on the next visit
    page.reload()
    expect(page.get_by_test_id("balance-ETH")).to_contain_text("0.5")
