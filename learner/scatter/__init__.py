"""Reinforced inverse scattering, host side (issue #22): batched physics, episodes, PPO training, evaluation."""
