"""Deterministic simulator for raftcore: simulated network, disks and clock.

Everything is driven by ``random.Random`` instances derived from one run seed,
so any failing run replays exactly with ``python -m tests.sim.run --seed N -v``.
"""
