"""Every registered metric on 2 gloo processes with uneven shards, and on 1 process; to JSON.

Run by ``tests/test_metrics_ddp.py`` as a subprocess (DDP inside the pytest process would
re-run pytest for rank 1)::

    python tests/ddp_metrics_script.py OUT.json

Rank 0 gets batches 0, 2, 3 (3 + 1 + 2 images, one of them all void), rank 1 gets batches 1
and 4 (2 + 4 images): different counts, sizes and shapes per rank. Each rank updates its own
metrics; ``compute()`` syncs the states through ``torch.distributed`` (gloo, CPU). The parent
then feeds all batches to fresh metrics in one process. Values are written with ``float.hex``
so the comparison is bit for bit where it can be.

The metrics are those of the registry ``tests/metric_cases.py`` (this script's directory is on
``sys.path``): ``NAME`` is the value of ``compute()``, ``NAME:METHOD`` the flattened tensor of
each of the entry's ``extras`` (``error_bound``, ``compute_per_class``).
"""

from __future__ import annotations

import json
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from metric_cases import BY_NAME, CASES

C = 6
SHARDS = {0: [0, 2, 3], 1: [1, 4]}


def make_metrics() -> dict:
    return {case.name: case.make(C, 255) for case in CASES}


def batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + i)
    n, h, w = [(3, 12, 10), (2, 12, 10), (1, 7, 9), (2, 12, 10), (4, 5, 6)][i]
    scale = torch.empty(n, 1, h, w).uniform_(0.3, 5.0, generator=g)
    z = torch.randn(n, C, h, w, generator=g) * scale
    hit = torch.rand(n, h, w, generator=g) < 0.7
    y = torch.where(hit, z.argmax(1), torch.randint(0, C, (n, h, w), generator=g))
    y[torch.rand(n, h, w, generator=g) < 0.1] = 255
    if i == 2:
        y[:] = 255  # a batch with no valid pixel
    return z, y


def results(metrics: dict) -> dict:
    out = {name: float(m.compute()).hex() for name, m in metrics.items()}
    for name, m in metrics.items():
        for method in BY_NAME[name].extras:  # synced like compute(): called on every rank
            values = getattr(m, method)().reshape(-1).tolist()
            out[f"{name}:{method}"] = [float(v).hex() for v in values]
    ece = metrics["ECE"]
    with ece.sync_context():  # the reduced states themselves (a no-op on one process)
        out["ECE:count"] = ece.count.tolist()
        out["ECE:correct_sum"] = ece.correct_sum.tolist()
        out["ECE:conf_sum"] = [v.hex() for v in ece.conf_sum.tolist()]
    return out


def worker(rank: int, world: int, port: int, path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    metrics = make_metrics()
    for i in SHARDS[rank]:
        for m in metrics.values():
            m.update(*batch(i))
    out = results(metrics)
    if rank == 0:
        with open(path, "w") as f:
            json.dump(out, f)
    dist.barrier()
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(path: str) -> None:
    ddp_path = path + ".ddp"
    mp.spawn(worker, args=(2, free_port(), ddp_path), nprocs=2, join=True)
    with open(ddp_path) as f:
        ddp = json.load(f)
    metrics = make_metrics()
    for i in sorted(SHARDS[0] + SHARDS[1]):
        for m in metrics.values():
            m.update(*batch(i))
    with open(path, "w") as f:
        json.dump({"ddp": ddp, "single": results(metrics)}, f)


if __name__ == "__main__":
    main(sys.argv[1])
