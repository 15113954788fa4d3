"""Tests of the delivery files: Dockerfile, compose stack, Helm chart, manifests, CI, monitoring."""
