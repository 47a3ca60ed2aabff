"""The generation core: catalog, validation, the CometAPI client, images, pricing, lifecycle.

Nothing in this package imports discord; tests/test_layout.py enforces it.
"""
