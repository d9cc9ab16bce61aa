"""Protocol-neutral wire codecs with no sockets: lines with limits, dot-stuffing."""
