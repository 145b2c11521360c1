"""Connection tracking: the flow-record layout, the tracker configuration and the numba flow table."""
