"""Persistence: one database per node, one repository per concern."""
