"""What the server saw: its Prometheus metrics, scraped during the measured rounds.

`names` maps each server's metric names to ours (one table), `scrape` reads and parses the
endpoint in a thread, `summary` turns the series into per-test metrics (defined there).
"""
