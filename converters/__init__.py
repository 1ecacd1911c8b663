"""Source converters, one module per source; each registers itself with @register."""
