"""Blinded expert review of where models and the annotation disagree: the study's fourth claim.

:mod:`.items` finds the regions, :mod:`.page` and :mod:`.server` show them to a reviewer, :mod:`.agreement`
measures how far reviewers agree, :mod:`.claim` turns the answers into claim 4 and the adjudicated scores.
"""
