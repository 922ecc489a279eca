"""`python -m workers [--gpu N] [--queues generate,train] [--burst]`: one RQ worker, pinned to one GPU.

CUDA_VISIBLE_DEVICES is set before torch is imported, and the parent never touches CUDA: RQ forks a
work-horse per job, and CUDA does not survive a fork (pytorch/pytorch#68861).
"""
from __future__ import annotations

import argparse
import os


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", help="GPU index to pin (sets CUDA_VISIBLE_DEVICES); omit for CPU or all")
    parser.add_argument("--queues", default="generate,train",
                        help="queues to serve, in priority order (default: generate,train)")
    parser.add_argument("--burst", action="store_true", help="drain the queues, then exit")
    parser.add_argument("--name", help="worker name (default: RQ's)")
    args = parser.parse_args(argv)
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu
    from backend.logs import configure_logging
    from rq import Worker

    from workers.context import context

    configure_logging()
    ctx = context()
    ctx.registry.discard_stale_staging()
    ctx.policy_dir()  # policy v0 exists before the first job (CPU only: no CUDA in the parent)
    queues = {"generate": ctx.queue.generate, "train": ctx.queue.train}
    names = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = set(names) - set(queues)
    if unknown:
        parser.error(f"unknown queues {sorted(unknown)}; choose from {sorted(queues)}")
    worker = Worker([queues[n] for n in names], connection=ctx.queue.redis, name=args.name)
    worker.work(burst=args.burst, with_scheduler=False)


if __name__ == "__main__":
    main()
