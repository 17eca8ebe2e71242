"""The API layer every omnimodel provider shares, and the providers.

:mod:`.remote` (scheduling, retries, budget, booking, redaction, decoding from the archive), :mod:`.types`
(the pieces a provider fills in), :mod:`.archive` (every raw answer, kept before it is decoded),
:mod:`.answers` and :mod:`.decoders` (answer forms and the masks they hold), one module or package per
provider (:mod:`.gemini`, :mod:`.openai`). May import: the shared modules, ``datasets`` (samples) and
``models.base``. Never ``store``, ``inference``, ``study`` or ``cli``.
"""
