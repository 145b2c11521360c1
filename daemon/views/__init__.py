"""Feature views: what models read, computed from what sources produce (see base.py).

``conn@1`` (conn.py), ``conn_series@1`` (conn_series.py); argus.py holds the Argus
semantics of the conn features. A view ``foo@N`` lives in the module ``foo``.
"""
