"""The operators' pages served by the agent: `setup_pages(app, db, config, data_dir)` adds them to the
agent's aiohttp app."""

from .pages import setup_pages

__all__ = ["setup_pages"]
