"""SrvThreds engine: the pattern-compatible thred engine, its agents and HTTP API."""
