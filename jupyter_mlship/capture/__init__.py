"""Capture: live notebook objects → ShipSpec + artifact files.

The only stage that touches live Python objects. ``code`` slices the notebook code the entry function
reaches, ``artifacts`` saves model objects in their safest faithful format, ``schema`` infers the request
and response schemas from the sample, ``environment`` pins the kernel's distributions, ``secrets`` scans
what would be exported.
"""
