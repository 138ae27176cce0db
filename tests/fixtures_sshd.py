"""Server fixture placeholder."""
