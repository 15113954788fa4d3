"""Composition roots: the embedded mode, the engine node, replay, the command line and settings."""
