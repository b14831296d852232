"""Model components; importing registers them in detectron2's registries."""
