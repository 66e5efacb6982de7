"""Publishing exports: one render made into files for each channel (size, loudness, captions, cover)."""
