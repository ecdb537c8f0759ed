"""Clean datasets, corruptions (-C), perturbation sequences (-P) and their on-disk layouts."""
