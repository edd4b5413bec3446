"""Thresholds: bound files, checking measured metrics against them, writing them."""
