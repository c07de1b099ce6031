"""Data layer: audio decoding, corpus readers, noise, augmentation, offline corpus synthesis (stands on w2vc.core)."""
