"""One module per paper: a NumPyro model, its training and its inference entry points.

* :mod:`jaxstars.models.cmd` — Cranmer et al.: colour–magnitude flow with iterative dust, distance posteriors.
* :mod:`jaxstars.models.flower` — O'Callaghan et al. (FLOWER): conditional BNAF of zero-extinction stars, per-star
  reddening and distance posteriors.
* :mod:`jaxstars.models.stellar` — Green et al.: data-driven stellar model θ → photometry + R(θ), photometric
  posteriors.
* :mod:`jaxstars.models.spectrophot` — Hogg, Eilers & Rix: spectrophotometric parallaxes with linear models.
* :mod:`jaxstars.models.galaxyflow` — Lim et al. (GalaxyFlow): CNF upsampling of star particles, EnBiD and MAF
  baselines, classifier test.
"""
