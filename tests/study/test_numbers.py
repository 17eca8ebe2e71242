"""How the reports write numbers (omniseg.study.numbers)."""

from __future__ import annotations

from omniseg.study.numbers import decimals, p_value


def test_numbers_are_printed_signed_to_three_places_and_small_p_values_as_a_bound():
    assert decimals(0.1234) == "+0.123" and decimals(-0.5) == "-0.500" and decimals(0.25, False) == "0.250"
    assert decimals(0.0) == "+0.000" and decimals(-0.0004) == "-0.000"
    assert decimals(float("nan")) == "–" and decimals(None) == "–" and decimals(None, False) == "–"
    assert p_value(0.0009) == "<0.001" and p_value(0.001) == "0.001" and p_value(0.04567) == "0.046"
    assert p_value(float("nan")) == "–" and p_value(None) == "–" and p_value(1.0) == "1.000"
