"""Berth's web dashboard (Django project). Reaches the engine only through engine.api."""
