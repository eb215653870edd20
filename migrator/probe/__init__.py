"""Reachability probing: the agent, the multi-namespace engine, the matrix builder and result analysis."""
