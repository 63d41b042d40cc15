"""The project's partitioner picks what aiokafka's (and Java's) default partitioner picks.

Every producer of a job's events must agree on its partition, whichever client wrote it.
"""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import example, given
from hypothesis import strategies as st

from services.contract.partitioner import murmur2, partition_for


@given(st.binary(max_size=300))
@example(b"")
@example(b"20261207-223000-6f1d7a5e-4c1b-4bd5-9a36-0d8f3c1f2b7aDIRECT")
@example(b"\xff" * 7)
def test_murmur2_is_kafkas(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data)


@given(st.binary(min_size=1, max_size=80), st.integers(min_value=1, max_value=64))
def test_a_key_goes_where_the_default_partitioner_sends_it(key: bytes, count: int) -> None:
    partitions = list(range(count))
    assert partition_for(key, partitions, partitions) == DefaultPartitioner()(
        key, partitions, partitions)


def test_a_record_without_key_goes_to_an_available_partition() -> None:
    assert {partition_for(None, [0, 1, 2], [2]) for _ in range(20)} == {2}
    assert {partition_for(None, [0, 1, 2], []) for _ in range(200)} == {0, 1, 2}
