"""Synapses: cleft detection and partners, the synapse table, the connectome."""
