"""Renderers: Markdown and PNG from the JSON-ready data of a run; nothing here computes a measurement.

markdown (tables, numbers), report (the reproduction report), theory (its theory section), beyond (the section on
what the paper left open), plots (the figures).
"""
