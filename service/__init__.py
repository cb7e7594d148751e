"""The service: FastAPI app that turns new items into semantic IDs and serves them.

Stands on `runtime/` and `store/` (and `codebooks/` below them); no torch, no `models/`.
`create_app(settings)` builds the app; `python -m service` runs it under uvicorn.
"""
