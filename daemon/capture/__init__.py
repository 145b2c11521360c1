"""Capture sources. Each yields :class:`~malsensor.daemon.capture.batch.PacketBatch` objects."""
