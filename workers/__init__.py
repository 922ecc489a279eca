"""The GPU side: RQ workers that generate candidates, train reward models and policies, and publish them to the
model registry. Never imports Flask or the backend's HTTP layer; reads backend.core, labels, store and queue.

Packages: runtime (how a worker runs jobs) -> jobs (the RQ entry points) -> recipes (one trl-style recipe per
algorithm, a Config beside each) -> ml (loading, scoring, generation, evaluation, selection features).
`python -m workers` starts a worker; `python -m workers.health` is its container healthcheck."""
