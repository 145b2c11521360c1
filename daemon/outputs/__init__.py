"""What the sensor writes: connection rows (extract), events (EVE JSONL), stats."""
