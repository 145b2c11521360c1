"""Intel Processor Trace: a numba packet decoder (decoder.py), its ptdump-style listing (listing.py)."""
