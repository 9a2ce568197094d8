"""Peers: the same endpoints written the way the frameworks' tutorials teach."""
