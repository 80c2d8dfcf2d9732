"""The sandbox's merchant account keys (channels.sandbox.accounts): made under the accounts secret,
checked by making them again, so a sandbox with the same secret (restarted) accepts them and one
with another secret, or a key changed in any way, does not."""
from channels.sandbox.accounts import Accounts


def test_a_key_is_accepted_by_any_sandbox_with_the_same_secret_and_by_no_other():
    issued = Accounts(lambda: "secret-one").open()
    assert issued["id"].startswith("sbxacct_") and issued["api_key"].startswith("sbxkey_")
    restarted = Accounts(lambda: "secret-one")  # nothing kept between the two
    assert restarted.holder(issued["api_key"]) == issued["id"]
    assert Accounts(lambda: "secret-two").holder(issued["api_key"]) is None
    assert Accounts().holder(issued["api_key"]) is None  # no secret given: one of its own, at random


def test_a_key_changed_anywhere_or_malformed_is_refused():
    accounts = Accounts(lambda: "secret-one")
    key = accounts.open()["api_key"]
    other = accounts.open()
    account_part, mac = key[len("sbxkey_"):].split("_", 1)
    swapped = f"sbxkey_{other['id'][len('sbxacct_'):]}_{mac}"  # another account's id under this key's MAC
    flipped = key[:-1] + ("A" if key[-1] != "A" else "B")
    for bad in (swapped, flipped, key + "x", key[:-1], "sbxkey_" + "0" * 32, "", "sbxkey_\udc80", key.upper()):
        assert accounts.holder(bad) is None, bad
    assert accounts.holder(other["api_key"]) == other["id"] and accounts.holder(key) == "sbxacct_" + account_part


def test_the_secret_is_read_once_and_only_when_an_account_is_used():
    reads = []

    def secret():
        reads.append(1)
        return "secret-one"

    accounts = Accounts(secret)
    assert reads == []  # a sandbox whose accounts are never used never asks (no database needed)
    key = accounts.open()["api_key"]
    accounts.holder(key)
    accounts.holder("sbxkey_nope")
    assert reads == [1]
