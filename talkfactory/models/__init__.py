"""ML and signal compute: pure functions and models over arrays. No I/O, no Prefect."""
