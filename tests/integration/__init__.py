"""Against real services: Redis, SQLite and PostgreSQL stores, RQ workers, trl recipes on tiny models, the Flask app."""
