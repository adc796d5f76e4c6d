"""The language every Conveyor component speaks: specs, events, expressions, interfaces.

Pure: nothing in this package performs I/O.
"""
