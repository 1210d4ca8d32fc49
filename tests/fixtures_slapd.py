"""Placeholder: replaced by the real-slapd fixtures."""
