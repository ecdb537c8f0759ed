"""The one checker for names users type: lists or comma strings, close matches, groups."""

import pytest

from pushpull._names import check_name, check_names, split_names

KNOWN = ("fog", "frost", "snow", "gaussian_noise", "shot_noise")


def test_a_comma_string_is_a_list_of_names_not_letters():
    assert split_names("fog,gaussian_noise") == ["fog", "gaussian_noise"]
    assert split_names(" fog , , snow ") == ["fog", "snow"]
    assert split_names(["fog", " snow"]) == ["fog", "snow"]
    assert split_names("fog") == ["fog"]


def test_check_names_accepts_both_forms_and_keeps_order_once_each():
    assert check_names("snow,fog,snow", KNOWN, "corruption") == ["snow", "fog"]
    assert check_names(["snow", "fog"], KNOWN, "corruption") == ["snow", "fog"]
    assert check_names(None, KNOWN, "corruption") == list(KNOWN)


def test_groups_expand():
    groups = {"noise": ("gaussian_noise", "shot_noise"), "all": KNOWN}
    assert check_names("noise,fog", KNOWN, "corruption", groups=groups) == ["gaussian_noise", "shot_noise", "fog"]
    assert check_names("all", KNOWN, "corruption", groups=groups) == list(KNOWN)


def test_unknown_names_get_close_matches_in_one_line():
    with pytest.raises(ValueError, match=r"unknown corruption 'fgo'; did you mean 'fog'\?") as err:
        check_names("snow,fgo", KNOWN, "corruption")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="choose from fog, frost"):
        check_name("zzzz", KNOWN, "corruption")
    with pytest.raises(ValueError, match="no corruption given"):
        check_names(" , ", KNOWN, "corruption")
