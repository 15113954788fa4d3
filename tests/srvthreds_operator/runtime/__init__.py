"""Unit tests of the operator runtime: status, ledger, reconcile, leader election."""
