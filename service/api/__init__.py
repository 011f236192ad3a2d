"""The HTTP layer: app factory and lifespan, routers, dependencies, schemas, the one error
handler, middlewares and the uvicorn entry point. Only this package knows FastAPI and pydantic
request bodies; it calls the use cases of ``service.core`` with plain values."""
