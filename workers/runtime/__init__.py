"""How a worker runs: the RQ worker and its thread budget, the job context (store, registries, settings), progress
into job meta, the first-run conversion of policy v0, and `accelerate launch` of a recipe. May import
workers.ml and backend (store, queue, core); never Flask."""
