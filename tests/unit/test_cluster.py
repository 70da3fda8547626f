"""The Dask engine's plain decisions: which path a cluster fit takes and which worker reads which partitions."""

from __future__ import annotations

from trainpipe.cluster import blocks, cluster_external_memory


def workers(limit: int, memory: int = 250_000_000, n: int = 2) -> dict:
    return {f"tcp://10.0.0.{i}:1": {"memory_limit": limit, "metrics": {"memory": memory}} for i in range(n)}


def test_auto_goes_out_of_core_when_a_worker_has_no_room_for_its_share():
    # 1M x 40 float32 = 160 MB, 80 MB a worker: 250 MB + 3.6 x 80 MB = 538 MB
    assert not cluster_external_memory("auto", False, 1_000_000, 40, workers(1_000_000_000))["on"]  # 700 MB room
    choice = cluster_external_memory("auto", False, 1_000_000, 40, workers(650_000_000))  # 455 MB room
    assert choice["on"] and "538 MB" in choice["reason"]
    # one small worker among large ones decides: 3 workers, 1.5M x 40 float32 = 80 MB each
    small = {"tcp://10.0.0.9:1": {"memory_limit": 650_000_000, "metrics": {"memory": 200_000_000}}}
    mixed = {**workers(2_000_000_000), **small}
    choice = cluster_external_memory("auto", False, 1_500_000, 40, mixed)  # 200 + 288 MB > 455 MB
    assert choice["on"] and "10.0.0.9" in choice["reason"], choice
    assert not cluster_external_memory("auto", False, 1_500_000, 40, workers(2_000_000_000, n=3))["on"]

def test_the_spec_and_the_memory_plan_decide_before_the_workers():
    roomy = workers(10**12)
    assert cluster_external_memory("on", False, 10, 1, roomy)["on"]
    assert not cluster_external_memory("off", True, 10**9, 40, workers(10**6))["on"]
    assert cluster_external_memory("auto", True, 10, 1, roomy)["on"]  # the data stages went out of core
    unlimited = {"tcp://10.0.0.1:1": {"memory_limit": 0, "metrics": {"memory": 0}}}
    assert not cluster_external_memory("auto", False, 10**9, 40, unlimited)["on"]


def test_blocks_are_contiguous_cover_every_partition_once_and_match_the_in_memory_placement():
    uris = [f"part-{i}" for i in range(7)]
    cut = blocks(uris, 2)
    assert cut == [uris[:4], uris[4:]]
    assert [u for block in blocks(uris, 3) for u in block] == uris and all(blocks(uris, 3))
    # the in-memory path pins partition i on worker i * n // len(uris): the same cut
    assert [k for k, block in enumerate(cut) for _ in block] == [i * 2 // 7 for i in range(7)]
