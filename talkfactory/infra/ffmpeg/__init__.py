"""ffmpeg: pure argument builders (args.py) apart from the code that runs processes."""
