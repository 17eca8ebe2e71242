"""Gemini: the model kind (:mod:`.model`), what omniseg knows of each Gemini model (:mod:`.catalog`) and
its batch jobs (:mod:`.batch`), all through the google-genai SDK. Imports as ``models.api`` does."""
