"""The built-in simulator: a physically consistent site (PV, load, battery, grid) that needs no vendor."""
