"""One revision per file, oldest first (0001 is the first release's schema)."""
