"""Orchestrator side of petavox: run config, planning, dispatch on Ray, ledger, CLI."""
