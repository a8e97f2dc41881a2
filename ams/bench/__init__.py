"""The session-viability benchmark: sessions (seed, synthetic, files), the runner and its report."""
