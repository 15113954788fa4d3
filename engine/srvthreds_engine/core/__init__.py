"""The engine's pure core: patterns, threds, conditions, expressions, and one hop's decision."""
