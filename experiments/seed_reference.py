"""The seed's Base-vs-Large reference figures, as the project's mission text states them.

These are quoted, not measured: wav2vec2 Base (95 M parameters) against Large (317 M), WER on LibriSpeech
test-clean and on an unnamed noisy set, latency for 3 s of audio on an unnamed CPU, fp32 weights. The sweep's
report (experiments/report.py) sets this machine's figures for its own Base-role and Large-role candidates
beside them, so every claim the seed makes (Base the fast first pass, Large the fallback for difficult audio)
is checked on measured numbers rather than repeated.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class SeedModel:
    """One column of the seed's table. Args:
    params_m: parameters (millions). latency_3s_ms: CPU latency for 3 s of audio. fp32_mb: fp32 weights
    (params × 4 bytes). wer_clean / wer_noisy: fractions (0.034 = 3.4 %), test-clean and the noisy set.
    """

    name: str
    params_m: float
    latency_3s_ms: float
    fp32_mb: float
    wer_clean: float
    wer_noisy: float


@dataclass(frozen=True, kw_only=True)
class SeedReference:
    base: SeedModel
    large: SeedModel
    source: str

    def ratio(self, field: str) -> float:
        """Large / Base for one figure (e.g. "latency_3s_ms")."""
        return getattr(self.large, field) / getattr(self.base, field)


SEED_REFERENCE = SeedReference(
    base=SeedModel(name="Base", params_m=95.0, latency_3s_ms=120.0, fp32_mb=380.0, wer_clean=0.034,
                   wer_noisy=0.082),
    large=SeedModel(name="Large", params_m=317.0, latency_3s_ms=380.0, fp32_mb=1300.0, wer_clean=0.019,
                    wer_noisy=0.051),
    source="the project's mission text (approximate figures: '~'), not measured here",
)
