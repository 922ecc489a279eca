"""The backend process's background threads: the model watcher (hot reload), the reconciler (what Redis or a
webhook missed) and deferred webhook work. May import backend.labels, queue, store and core, and the Label
Studio client in backend.labelstudio; never Flask."""
