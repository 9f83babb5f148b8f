"""Orchestrator side of petavox: stage declarations and planning, the run config, Ray, CLI."""
