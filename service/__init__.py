"""The FastAPI service: real-time semantic IDs for new items (see ../shared/DESIGN.md; issue 4)."""
