"""The database: the pool and migrations, checkpoints, failed items, the quarantine,
status reads, and the loaders and writers of each table."""
