"""Recipes that run the shared trainer more than once (multistage methods such as MCL)."""
