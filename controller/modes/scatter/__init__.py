"""Reinforced inverse scattering (issue #22): the transceiver-ring mode, its physics and reconstruction."""
