"""Reports people look at: the offline HTML report, its plots, the dashboard (optional extras)."""
