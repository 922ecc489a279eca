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
    parser.add_argument(
        "--queues", default="generate,train", help="queues to serve, in priority order (default: generate,train)"
    )
    parser.add_argument("--burst", action="store_true", help="drain the queues, then exit")
    parser.add_argument("--name", help="worker name (default: RQ's)")
    parser.add_argument(
        "--no-preload",
        action="store_true",
        help="import the job modules in each work-horse instead of once in the worker",
    )
    args = parser.parse_args(argv)
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu
    # torch.cuda.is_available() through NVML does not initialise CUDA, so the parent stays fork-safe.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    from backend.core.logs import configure_logging
    from backend.core.settings import get_settings
    from workers.runtime.worker import RLHFWorker, apply_thread_budget, thread_budget

    settings = get_settings()
    threads = thread_budget(settings.worker_threads, settings.local_workers)
    apply_thread_budget(threads)  # before torch is imported, here or in a child
    from workers.runtime.context import context

    configure_logging()
    ctx = context()
    for registry in ctx.registries.all():
        registry.discard_stale_staging()
    ctx.base_policy()  # policy v0 exists before the first job; converted in a child process, never here
    try:
        queues = ctx.queue.named(args.queues)
    except ValueError as exc:
        parser.error(str(exc))
    if not args.no_preload:
        preload()
    worker = RLHFWorker(queues, connection=ctx.queue.redis, name=args.name, stall_seconds=settings.job_stall_seconds)
    worker.log.info("torch threads per job: %d; stall guard: %gs", threads, settings.job_stall_seconds)
    worker.work(burst=args.burst, with_scheduler=False)


def preload() -> None:
    """Import torch/transformers/trl once, before RQ forks a work-horse per job: saves ~4 s per job. gc.freeze()
    keeps the collector off the ~500k imported objects (and their pages shared with the children)."""
    import gc

    import workers.jobs.generate  # noqa: F401 - preloaded once: every forked work-horse inherits it
    import workers.jobs.train  # noqa: F401 - likewise (torch, trl, transformers)

    gc.freeze()


if __name__ == "__main__":
    main()
