"""The HTTP edge: the Flask app factory (`app.create_app`), the decide fast path, one blueprint per
resource, the request schemas and the OpenAPI document, problem+json answers."""
