"""Media I/O on top of ffmpeg: probing, audio extraction, frame decode and encode pipes."""
