"""Object stores behind one protocol: local folder and S3 (MinIO SDK)."""
