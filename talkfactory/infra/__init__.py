"""Everything that touches the outside world: settings, ffmpeg, object stores, lineage. No Prefect."""
