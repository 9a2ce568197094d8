"""World files: the tenants and their data, declared in JSON and loaded in one transaction."""

from cbstop.world.loader import LoadSummary, WorldError, load_world, load_world_file

__all__ = ["LoadSummary", "WorldError", "load_world", "load_world_file"]
