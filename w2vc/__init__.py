"""w2vc: compress wav2vec 2.0 CTC models for edge devices."""
