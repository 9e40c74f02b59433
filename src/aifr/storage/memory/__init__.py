"""In-memory adapters, for tests and one-shot work that needs no project."""
