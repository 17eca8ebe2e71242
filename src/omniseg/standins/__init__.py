"""Fake servers that speak (and misbehave like) the real services, shipped so tests, scripts and `omniseg demo` share
them, and `tiny_sam3`, a random SAM 3 checkpoint the tests build. They import nothing of omniseg but each other."""
