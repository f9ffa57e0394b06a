"""Action heads of the METIS policy."""
