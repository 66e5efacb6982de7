"""Speech signal work: features, denoise, voice activity, speakers, clips."""
