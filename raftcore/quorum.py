"""Majority arithmetic over the voters of a configuration."""

from __future__ import annotations

from collections.abc import Iterable


def majority(voters: int) -> int:
    """How many voters make a majority (a quorum) of ``voters``."""
    return voters // 2 + 1


def has_majority(voter_ids: Iterable[int], agreeing: Iterable[int]) -> bool:
    """Whether the ``agreeing`` servers include a majority of ``voter_ids``."""
    voters = set(voter_ids)
    if not voters:
        return False
    return len(voters.intersection(agreeing)) >= majority(len(voters))


def committed_index(match_indexes: list[int]) -> int:
    """The highest index that a majority of voters (given by their match indexes) has."""
    if not match_indexes:
        return 0
    ordered = sorted(match_indexes, reverse=True)
    return ordered[majority(len(ordered)) - 1]
