"""Routing data: the routing table, converters from public formats, splits and training samples."""
