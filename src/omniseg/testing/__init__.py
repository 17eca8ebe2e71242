"""Test helpers shipped with the package so that tests and scripts/ share them."""
