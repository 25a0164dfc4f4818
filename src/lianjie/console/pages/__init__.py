"""The console's built-in pages; each module registers its ``Page`` on import."""
