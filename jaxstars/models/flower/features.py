"""FLOWER's modelled vector ``x = Λ M_int`` and its extinction (O'Callaghan et al., paper 002, §2.1 and §2.8).

``x`` is the leading absolute magnitude (Gaia G) followed by the colours of every other band relative to it
(Eqs. 3–4): for Gaia + PS1 ``x = (M_G, M_BP − M_G, M_RP − M_G, M_g − M_G, …, M_y − M_G)`` (8 dimensions), with
2MASS ``J, H, Ks`` appended 11.  ``Λ`` has unit determinant, so densities in ``x`` and in ``M_int`` coincide.

The extinction of a star with reddening ``E = E(B−V)`` (SFD scale) is ``A = R(E, C) E`` per band (§2.8), with the
Zhang & Yuan (2023) coefficients by default and ``C`` the *intrinsic* colour ``(BP − RP)₀`` read off ``x``:
``C = x_BP − x_RP`` (both colours are relative to G).  Everything here is pure ``jax.numpy``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import jax.numpy as jnp
import numpy as np

from jaxstars.astro.extinction import ExtinctionLaw, zhang_yuan_law, zhang_yuan_teff_from_bp_rp0

__all__ = ["GAIA_PS1", "GAIA_PS1_2MASS", "FlowerFeatures", "catalog_band"]

GAIA_PS1: tuple[str, ...] = ("G", "BP", "RP", "g", "r", "i", "z", "y")
"""FLOWER's Gaia DR3 + Pan-STARRS1 band set (8 dimensions, G first)."""

GAIA_PS1_2MASS: tuple[str, ...] = GAIA_PS1 + ("J", "H", "Ks")
"""FLOWER's Gaia DR3 + PS1 + 2MASS band set (11 dimensions)."""

_PS1 = ("g", "r", "i", "z", "y")
_LAW_ARGUMENTS = ("bp_rp0", "teff", None)


def catalog_band(band: str) -> str:
    """Canonical catalogue band name (``jaxstars.astro.schema``) of a FLOWER band: ``"g"`` → ``"ps1_g"``."""
    return f"ps1_{band}" if band in _PS1 else band


@dataclass(frozen=True)
class FlowerFeatures:
    """The FLOWER feature vector for a band set: ``x = Λ M`` (Eqs. 3–4) and the extinction law (§2.8).

    Parameters
    ----------
    bands : tuple of str
        Band names of :mod:`jaxstars.astro.bands` (``G``, ``BP``, ``RP``, ``g`` … ``y``, ``J``, ``H``, ``Ks``);
        the first is the leading (absolute-magnitude) band.  ``BP`` and ``RP`` must be present unless
        ``law_argument`` is ``None``.
    law_argument : {"bp_rp0", "teff", None}
        The second argument the extinction law expects: the intrinsic colour ``(BP−RP)₀`` (computed from ``x``),
        ``Teff`` (converted from ``(BP−RP)₀`` with Zhang & Yuan's relation), or nothing (constant laws).
    law : "zhang_yuan" or ExtinctionLaw
        The law ``R(E, C)``; ``"zhang_yuan"`` builds :func:`~jaxstars.astro.extinction.zhang_yuan_law` for
        ``bands`` and ``law_argument``.  A custom law must list ``bands`` as its entries, in order, with ``E`` in
        E(B−V); a model with a custom law can be saved but must be given the law again when loaded.
    """

    bands: tuple[str, ...] = GAIA_PS1
    law_argument: str | None = "bp_rp0"
    law: str | ExtinctionLaw = "zhang_yuan"

    def __post_init__(self):
        object.__setattr__(self, "bands", tuple(self.bands))
        if len(self.bands) < 1 or len(set(self.bands)) != len(self.bands):
            raise ValueError(f"bands must be a non-empty list of distinct names, got {self.bands}")
        if self.law_argument not in _LAW_ARGUMENTS:
            raise ValueError(f"law_argument must be one of {_LAW_ARGUMENTS}, got {self.law_argument!r}")
        if self.law_argument is not None and not {"BP", "RP"} <= set(self.bands[1:]):
            raise ValueError(
                f"law_argument={self.law_argument!r} needs the intrinsic (BP-RP)_0, so BP and RP must be among "
                f"the non-leading bands; got {self.bands}"
            )
        if isinstance(self.law, str):
            if self.law != "zhang_yuan":
                raise ValueError(f"law must be 'zhang_yuan' or an ExtinctionLaw, got {self.law!r}")
            if self.law_argument is None:
                raise ValueError("the Zhang & Yuan law needs law_argument 'bp_rp0' or 'teff'")
        elif isinstance(self.law, ExtinctionLaw):
            if len(self.law.entries) != len(self.bands):
                raise ValueError(f"the law has entries {self.law.entries}, the features have bands {self.bands}")
        else:
            raise TypeError(f"law must be 'zhang_yuan' or an ExtinctionLaw, got {type(self.law).__name__}")

    # -- shapes and names -----------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Dimension of ``x`` (number of bands)."""
        return len(self.bands)

    @property
    def names(self) -> tuple[str, ...]:
        """``("M_G", "BP-G", "RP-G", "g-G", …)``."""
        ref = self.bands[0]
        return (f"M_{ref}",) + tuple(f"{b}-{ref}" for b in self.bands[1:])

    @property
    def leading_band(self) -> str:
        return self.bands[0]

    @property
    def catalog_bands(self) -> tuple[str, ...]:
        """Catalogue (schema) names of the bands: columns ``mag_<name>`` and ``mag_err_<name>``."""
        return tuple(catalog_band(b) for b in self.bands)

    @cached_property
    def matrix(self) -> np.ndarray:
        """``Λ`` of Eq. 4: first row selects the leading band, row ``i`` is ``band_i − leading``."""
        lam = np.eye(self.dim)
        lam[1:, 0] = -1.0
        return lam

    @cached_property
    def extinction_law(self) -> ExtinctionLaw:
        """The :class:`~jaxstars.astro.extinction.ExtinctionLaw` ``R(E, C)`` for :attr:`bands`."""
        if isinstance(self.law, ExtinctionLaw):
            return self.law
        return zhang_yuan_law(self.bands, argument=self.law_argument)

    # -- Λ and Λ⁻¹ (Eqs. 3–4) -------------------------------------------------------------------------------------
    def intrinsic(self, M) -> jnp.ndarray:
        """``x = Λ M`` (Eq. 3): ``(..., dim)`` magnitudes → (leading magnitude, colours relative to it).

        Works for absolute and apparent magnitudes alike (a common shift moves only ``x_0``).
        """
        M = jnp.asarray(M)
        self._check(M)
        return jnp.concatenate([M[..., :1], M[..., 1:] - M[..., :1]], axis=-1)

    def absolute(self, x) -> jnp.ndarray:
        """``M = Λ⁻¹ x``: (leading magnitude, colours) → magnitudes, ``(..., dim)``."""
        x = jnp.asarray(x)
        self._check(x)
        return jnp.concatenate([x[..., :1], x[..., 1:] + x[..., :1]], axis=-1)

    def _check(self, a):
        if a.shape[-1] != self.dim:
            raise ValueError(f"expected last dimension {self.dim} ({self.names}), got shape {a.shape}")

    # -- extinction (§2.8) ----------------------------------------------------------------------------------------
    def law_colour(self, x) -> jnp.ndarray:
        """The law's colour argument from intrinsic features: ``(BP − RP)₀ = x_BP − x_RP``, shape ``(...)``."""
        x = jnp.asarray(x)
        i_bp, i_rp = self.bands.index("BP"), self.bands.index("RP")
        return x[..., i_bp] - x[..., i_rp]

    def law_input(self, x):
        """What the law's second argument receives for intrinsic features ``x`` (``None`` for constant laws)."""
        if self.law_argument is None:
            return None
        colour = self.law_colour(x)
        return zhang_yuan_teff_from_bp_rp0(colour) if self.law_argument == "teff" else colour

    def coefficients(self, ebv, x) -> jnp.ndarray:
        """``R(E, C)`` per band, shape ``(..., dim)``, with ``C`` from ``x`` (see :meth:`law_input`)."""
        return self.extinction_law.coefficients(ebv, self.law_input(x))

    def extinction(self, ebv, x) -> jnp.ndarray:
        """Extinction ``A_b = R_b(E, C) E`` in magnitudes per band (§2.8), shape ``(..., dim)``.

        ``ebv`` (``(...)``) is ``E(B−V)`` on the SFD scale, ``x`` (``(..., dim)``) the intrinsic features whose
        ``(BP−RP)₀`` sets the law's colour.  Reddened apparent magnitudes are ``Λ⁻¹ x + A + μ`` (Eq. 5).
        """
        ebv = jnp.asarray(ebv)
        return ebv[..., None] * self.coefficients(ebv, x)

    def extinction_features(self, ebv, x) -> jnp.ndarray:
        """The same extinction in feature space, ``Λ A``: ``(A_lead, A_b − A_lead, …)``."""
        return self.intrinsic(self.extinction(ebv, x))

    # -- serialisation --------------------------------------------------------------------------------------------
    def to_config(self) -> dict:
        law = self.law if isinstance(self.law, str) else {"custom": self.law.name}
        return {"bands": list(self.bands), "law_argument": self.law_argument, "law": law}

    @classmethod
    def from_config(cls, config: dict, law: ExtinctionLaw | None = None) -> FlowerFeatures:
        """Inverse of :meth:`to_config`; a custom law must be passed as ``law``."""
        stored = config.get("law", "zhang_yuan")
        if isinstance(stored, dict):
            if law is None:
                raise ValueError(f"this model used a custom extinction law ({stored.get('custom')!r}): pass law=")
            stored = law
        elif law is not None:
            stored = law
        return cls(bands=tuple(config["bands"]), law_argument=config.get("law_argument", "bp_rp0"), law=stored)
