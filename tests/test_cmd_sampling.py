"""CMD distance posteriors by the shared vmapped NUTS engine agree with the grid posterior (quadrature-checked)."""

import numpy as np
import pytest

from jaxstars.inference import NUTSConfig
from jaxstars.models.cmd import FLAGS, nuts_distance_posteriors
from test_cmd_model import BAD, GOOD, main_results, main_stars, model3  # noqa: F401  (module fixtures)


@pytest.mark.slow  # ~30 s; test_cmd_model.py checks NUTS vs the grid by default, test_inference_nuts.py the vmapping
def test_vmapped_nuts_matches_grid_for_every_good_star(model3, main_stars, main_results):  # noqa: F811
    model, params = model3
    res = nuts_distance_posteriors(
        model, params, main_stars, key=4, nuts=NUTSConfig(num_warmup=300, num_samples=1000, batch_size=8)
    )
    for name, i in GOOD.items():
        mean, std = main_results["distance_mean"][i], main_results["distance_std"][i]
        ess = res["ess_bulk"][i]
        assert ess > 100, name
        # Monte-Carlo error of the mean is std/√ESS; allow 5 of them, and 15 % on the width
        assert abs(res["distance_mean"][i] - mean) < 5 * std / np.sqrt(ess), (name, res["distance_mean"][i], mean)
        assert abs(res["distance_std"][i] / std - 1) < 0.15, (name, res["distance_std"][i], std)
        assert abs(res["distance_q50"][i] - main_results["distance_q50"][i]) < 0.25 * std, name
        assert res["distance_samples"].shape[1] == 64
    for name in ("nan_mag", "no_position", "bad_bp_error"):
        i = BAD[name]
        assert np.isnan(res["distance_mean"][i]) and res["flags"][i] == main_results["flags"][i], name
        assert res["flags"][i] & (FLAGS["missing_photometry"] | FLAGS["no_dust"]), name
