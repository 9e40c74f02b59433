"""Transports: how clients reach aifr (MCP today)."""
