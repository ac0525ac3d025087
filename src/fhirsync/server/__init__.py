"""The HTTP layer: FastAPI app, authentication, error mapping and one router per surface."""
