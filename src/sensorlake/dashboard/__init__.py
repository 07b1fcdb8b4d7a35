"""The dashboard: a single-page app served from the package, on the API's port."""
