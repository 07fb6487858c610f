-- SPEC §12 / issue 20: which source a stored book came from. The simulator may decide
-- on the book watcher's live book (OCULUS_LIVE_BOOKS_URL) instead of a REST /book; each
-- stored book records which it was.
ALTER TABLE order_book_snapshot
    ADD COLUMN source text NOT NULL DEFAULT 'REST' CHECK (source IN ('REST', 'LIVE'));
