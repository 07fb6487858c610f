"""The dashboard: static HTML pages and PNG charts in `public/`, rebuilt from the
snapshot and rollup tables every few seconds (`python -m site_builder --loop`)."""
