"""Shards: every item in exactly one slice, the same slices in every process, K/N parsed strictly."""

import pytest

from pushpull.engine.distributed import DistContext, Shard, parse_shard, process_shard


@pytest.mark.parametrize("total", [0, 1, 7, 10, 1000])
@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_shards_cover_every_item_once(total, count):
    covered = []
    for index in range(count):
        start, stop = Shard(index, count).bounds(total)
        covered.extend(range(start, stop))
        assert stop - start in (total // count, -(-total // count))
    assert covered == list(range(total))


def test_parse_shard():
    assert parse_shard("0/1") == Shard(0, 1) and parse_shard("3/8") == Shard(3, 8)
    assert str(parse_shard("3/8")) == "3/8"
    for bad in ["8/8", "1", "a/b", "-1/2", "1/0", "1/2/3", ""]:
        with pytest.raises(ValueError, match="K counts from 0"):
            parse_shard(bad)


def test_torchrun_ranks_split_an_array_task():
    # array task 1 of 3, each run by 2 torchrun processes: slices 2 and 3 of 6
    assert [process_shard(DistContext(rank, 2), Shard(1, 3)) for rank in (0, 1)] == [Shard(2, 6), Shard(3, 6)]
    assert process_shard(DistContext()) == Shard(0, 1)
