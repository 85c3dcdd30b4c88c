"""Templates symgrad renders into generated modules (package data, shipped in the wheel)."""
