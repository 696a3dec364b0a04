"""Temporal grounding data: annotation readers, feature stores, raw-video features, demo corpus."""
