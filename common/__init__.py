"""Leaves shared by ``appliance`` and ``drivers``: the capture clock, geometry, settings base, atomic writes,
paths and the error base. Imports nothing from either package (``appliance -> drivers -> common``)."""
