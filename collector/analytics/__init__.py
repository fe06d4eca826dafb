"""Pure numpy analytics over stored series: energy, PUE, availability, settlement."""
