"""zip_models(progress=...): a tqdm bar on stderr, quiet, or the user's callback."""
import pytest

import tfmot_zip
from tfmot_zip.apps.zoo import example_pair


@pytest.fixture(scope="module")
def pair():
    a, b, (xa, xb) = example_pair()
    return a, b, (xa, xb)


def test_progress_true_draws_a_bar_over_every_stage(pair, capsys):
    a, b, data = pair
    tfmot_zip.zip_models(a, b, calibration_data=data, progress=True)
    err = capsys.readouterr().err
    assert "zipping" in err and "/2 [" in err  # two hidden layers: two stages, with elapsed/ETA


def test_quick_zips_are_silent_by_default_and_false_is_quiet(pair, capsys):
    a, b, data = pair
    tfmot_zip.zip_models(a, b, calibration_data=data)  # well under the 3 s delay
    tfmot_zip.zip_models(a, b, calibration_data=data, progress=False)
    assert "zipping" not in capsys.readouterr().err


def test_a_callable_gets_every_stage_and_the_end(pair):
    a, b, data = pair
    calls = []
    tfmot_zip.zip_models(a, b, calibration_data=data, progress=lambda *args: calls.append(args))
    assert calls == [(0, 2, "fc1"), (1, 2, "fc2"), (2, 2, "")]


def test_a_bad_progress_value_is_refused(pair):
    a, b, data = pair
    with pytest.raises(ValueError, match="progress must be None.*received 'yes'"):
        tfmot_zip.zip_models(a, b, calibration_data=data, progress="yes")
