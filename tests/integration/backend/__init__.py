"""The backend against real services: the Flask app and its protocol, the SQL stores (SQLite and PostgreSQL),
the reconciler on Redis, fuzzed payloads, the export."""
