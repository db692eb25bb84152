"""jobmon's core: see README's "Architecture" for the layers (`ls core/` shows them)."""
