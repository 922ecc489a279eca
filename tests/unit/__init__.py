"""Pure logic: no Redis, PostgreSQL, Label Studio or worker processes."""
