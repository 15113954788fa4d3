"""Tests of the SrvThreds repository."""
