"""The labels domain, pure Python: Label Studio layouts and annotations turned into preference pairs, the
retrain trigger, which candidates to show (selection) and what labels say about quality. May import
backend.store and backend.core; never Flask, Redis, torch."""
