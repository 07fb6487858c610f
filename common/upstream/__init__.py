"""Speaking to Polymarket and the chain: the HTTP edge, the clients and the wire models
(pydantic, at the boundary). No SQL here."""
