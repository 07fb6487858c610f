"""Pure logic: money, the book walk, copy decisions, ledger entries, the portfolio model,
PnL folds, config merge. Imports no psycopg, no httpx and nothing of store, upstream or
runtime (an import-linter contract in `make test` holds it)."""
