"""Reports: printed tables (rich) and plots (PNG through matplotlib's Agg canvas, no display needed)."""
