"""Fixtures of the LiteSAM model tests."""

from litesam_tiny import tiny_litemedsam, tiny_litesam  # noqa: F401  (fixtures)
