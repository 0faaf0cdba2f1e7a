"""HTTP mechanism: the ASGI application, its routes and request helpers."""
