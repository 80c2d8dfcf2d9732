"""The sandbox channel: a simulated PSP over real HTTP (server.py) and its adapter (adapter.py).

The outcome of every operation is chosen by the last two digits of its amount (outcomes.py).
"""
