"""The inference gateway: chat templates, the RocksDB generation cache, and the backend pool."""
