"""The sync engine: filters, apply, merge, retry, pull, push, runner, scheduler."""
