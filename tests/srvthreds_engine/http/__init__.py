"""Tests of the engine HTTP API, settings, metrics, logging and the embedded app."""
