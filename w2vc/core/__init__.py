"""The core layer: artifacts and provenance, presets, loading, runnable models. Imports nothing above it."""
