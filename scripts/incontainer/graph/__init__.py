"""Frozen graphs: reading and sniffing them, importing them, their manifests and custom-op libraries."""
