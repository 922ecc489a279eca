"""The Label Studio ML backend: the HTTP layer Label Studio calls, the labels domain, the SQL store and model
registry, the job queue, background threads and the admin CLI. It never imports workers, torch or trl.

Packages, from the request inwards (each may import those listed after it, never those before):
http (Flask app, protocol, payloads, the Label Studio client) -> background (watcher, reconciler, deferred
work) -> labels (annotations to pairs, the trigger, selection) -> queue (RQ chains and their status) ->
store (SQL store, migrations, model registry) -> core (settings, defaults, algorithms, gates, stats).
admin (cli, export, report, status) sits beside http as the other way in."""
