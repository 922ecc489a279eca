"""The Label Studio ML backend: the HTTP layer Label Studio calls, the labels domain, the job queue, the SQL store
and model registry, background threads and the admin CLI. It never imports workers, torch or trl.

Packages, from the request inwards (each may import those after it, never those before):
http (Flask app, routes, payloads, the thin adapter) -> background (watcher, reconciler, deferred work) ->
labels (request checks, annotations to pairs, the trigger, selection) -> labelstudio.py (the label-studio-sdk
client) and queue (RQ chains and their status) -> store (SQL store, migrations, model registry) -> core
(settings, defaults, algorithms, gates, stats, logs, locks). admin (cli, export, report, status) is the other
way in, beside http; services.py wires settings into store, queue and registries for both. The store names
the labels domain's Pair for type hints only."""
