"""Serving: FastAPI app with micro-batching and a web page (`foveal serve`)."""
