"""Recipes that run the shared trainer more than once (multistage methods such as MCL; the
class-incremental tasks of COCONUT)."""
