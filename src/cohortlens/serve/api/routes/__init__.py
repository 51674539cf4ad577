"""One router module per area of the API (the FastAPI full-stack template's ``api/routes``)."""
