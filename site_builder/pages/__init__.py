"""One module per page: a typed context built by queries, and what the page publishes
(its HTML and its charts). Templates never touch the database."""
