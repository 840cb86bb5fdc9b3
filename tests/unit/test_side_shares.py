"""How the side script splits a side's connections over worker processes."""

from __future__ import annotations

import pytest

from .sidescript import side


def test_split_shards_caps_each_worker() -> None:
    assert side.split_shards([[5000, 7], [5001, 5]], 4) == [
        [[5000, 4]], [[5000, 3], [5001, 1]], [[5001, 4]]]


def test_small_side_keeps_one_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(side, "cpus", lambda: 2)
    assert side.default_share([[5000, 1999]]) == 1999
    assert len(side.split_shards([[5000, 1999]], side.default_share([[5000, 1999]]))) == 1


@pytest.mark.parametrize(("n", "cpus", "workers", "share"),
                         [(2000, 2, 2, 1000), (10001, 2, 2, 5001), (100_000, 4, 4, 25_000)])
def test_one_worker_per_cpu(monkeypatch: pytest.MonkeyPatch, n: int, cpus: int,
                            workers: int, share: int) -> None:
    monkeypatch.setattr(side, "cpus", lambda: cpus)
    cap = side.default_share([[5000, n // 2], [5001, n - n // 2]])
    assert cap == share
    shares = side.split_shards([[5000, n // 2], [5001, n - n // 2]], cap)
    assert len(shares) == workers
    assert sum(c for share_ in shares for _, c in share_) == n
