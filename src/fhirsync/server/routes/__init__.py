"""One router module per HTTP surface."""
