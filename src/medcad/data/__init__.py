"""Data: splits by series, caches, datasets returning typed samples, samplers, synthetic cohorts."""
