"""`python -m omniseg.cli`: the same command line as `omniseg`."""

from omniseg.cli import app

app()
