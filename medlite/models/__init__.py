"""Model families of medlite (each module registers its variants)."""
