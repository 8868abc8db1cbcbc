"""jaxstars: data-driven stellar posteriors (distance, dust, stellar parameters) with JAX and NumPyro."""

__version__ = "0.1.0"
