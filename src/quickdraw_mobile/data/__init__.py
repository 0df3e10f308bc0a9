"""Quick, Draw! data: class names, download, ingest, rendering, the on-disk store and the batch loader."""
