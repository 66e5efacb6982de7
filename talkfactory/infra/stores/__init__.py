"""Object stores behind one protocol: local folder and S3 (MinIO SDK).

``open_store(url, endpoint=..., access_key=..., secret_key=...)`` is the usual way in; see
``base.ObjectStore`` for the contract every store keeps.
"""

from __future__ import annotations

from talkfactory.infra.stores.base import ObjectInfo, ObjectStore, validate_key
from talkfactory.infra.stores.local import LocalObjectStore
from talkfactory.infra.stores.s3 import S3ObjectStore
from talkfactory.infra.stores.urls import StoreLocation, open_store, parse_store_url

__all__ = [
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "S3ObjectStore",
    "StoreLocation",
    "open_store",
    "parse_store_url",
    "validate_key",
]
