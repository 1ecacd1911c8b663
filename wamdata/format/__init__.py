"""The on-disk dataset format v1: layout, writer, reader, video."""
