"""Offline stand-in for Polymarket (Data API, CLOB, Gamma) and the Polygon chain.

Independent of `common/` on purpose: it implements the wire formats from the written
reference, so a misreading on either side shows up as a failing end-to-end test.
"""
