"""The inverse-scattering instrument: time-harmonic acoustic forward model (issue #22)."""
