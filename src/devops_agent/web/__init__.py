"""The web service: FastAPI app factory, API routers, pages, templates, static files, error mapping."""
