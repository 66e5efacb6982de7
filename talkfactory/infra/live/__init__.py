"""Live push: streaming finished exports to RTMP/RTMPS ingest servers (issue 12)."""
