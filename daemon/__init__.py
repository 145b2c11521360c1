"""The sensor: capture sources, decoding, connection tracking, feature views and the runtime.

Nothing under this package imports training code (flax, optax, scikit-learn).
"""
