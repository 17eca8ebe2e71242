"""Fake servers that speak (and misbehave like) the real services, shipped so tests, scripts and `omniseg demo` share
them. They import nothing of omniseg but each other."""
