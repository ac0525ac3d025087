"""Atom feeds: render events as pages, parse pages, read a feed forward from a marker."""
