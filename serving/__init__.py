"""The online store, the refresher that fills it from ``lte-updates``, and the read API."""
